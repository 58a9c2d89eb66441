"""StartIo and custom StartIo queues (lanes), whose workers run in the device's task group.

Reference sections 7.2 to 7.5.  In Windows, ``IoStartPacket`` calls the driver's StartIo routine
synchronously when the device is idle, and ``IoStartNextPacket`` calls it again (nested) for the next
packet.  A StartIo routine in airp is a coroutine, so it cannot be called from inside a synchronous
function: each StartIo queue has one **worker task**, running in its device's task group, and that
worker is the only place its StartIo routine runs.  Starting a packet hands it to the worker; the
worker calls the routine; the routines of one queue therefore never overlap, which is the point of a
StartIo queue.  No task is created per IRP: a queue's worker sleeps on one lazily created event
when it has nothing to start.

When the next packet starts
---------------------------
- The **system** StartIo queue follows Windows: the driver calls :func:`start_next_packet` (or
  :func:`start_next_packet_by_key`) when it is done with the current IRP, usually right after
  :func:`~airp.complete_request` (:func:`complete_and_start_next` does both).  A driver that never
  calls it stalls its device, as in Windows.
- A **custom** queue (:class:`StartIoQueue`) starts its next packet when its StartIo routine returns
  (``start_next_on_return=True``, the loop of the driver books' custom StartIo), unless the routine
  already started the next one itself.  A routine that leaves its IRP to be completed elsewhere
  should turn that off and call :meth:`StartIoQueue.start_next_packet` from there.
- A StartIo routine that **raises** has its IRP completed with STATUS_INTERNAL_ERROR (if it still
  held it), the failure is reported (:attr:`DeviceTasks.failures`, the ``on_error`` callback, or a
  :class:`DeviceRoutineError` when the device's block ends), and the queue goes on with the next
  IRP.  The I/O manager never loses an IRP.

Departures from Windows (each also noted where it applies):

- StartIo is never re-entered: the next StartIo call always waits until the running one returns,
  with or without the Deferred attribute.  What Deferred changes is *when the next IRP is taken out
  of the queue*: at the ``start_next_packet`` call, or (Deferred, called while StartIo runs) only
  after the running StartIo returns (reference 7.4).
- ``start_packet`` marks the IRP pending itself (harmless if the driver already did) and returns
  STATUS_PENDING, so a dispatch routine can ``return start_packet(device, irp)``.
- NonCancelable is on by default, for the system queue as for lanes: a started packet's cancel
  routine is disarmed before its StartIo routine runs (reference 7.2 step 4 and 7.3 leave it
  armed unless the attribute is set).  A routine that wants to be woken by a cancel awaits
  :func:`~airp.wait_or_cancelled`; ``set_start_io_attributes(device, non_cancelable=False)`` /
  ``StartIoQueue(..., non_cancelable=False)`` give Windows' default back.
"""

from __future__ import annotations

import inspect
import types
from collections import deque
from collections.abc import Awaitable, Callable, Generator
from typing import Any

import anyio

from .._machine._bugcheck import BugCheck
from .._machine._completion import complete_after_error, complete_request
from .._machine._device import DeviceObject
from .._machine._devqueue import DeviceQueue, DeviceQueueError, _check_key
from .._machine._irp import CancelRoutine, Irp
from .._machine._misuse import must_be
from .._machine._monitor import current_request
from .._machine._status import (
    STATUS_CANCELLED,
    STATUS_INTERNAL_ERROR,
    STATUS_PENDING,
    NtStatus,
)
from ._device_tasks import DeviceState, RoutineFailure, _Hold, _KeepFirst, _QueueBase, device_tasks
from ._waiter import Waiter, new_waiter

__all__ = [
    "StartIoQueue",
    "StartIoRoutine",
    "complete_and_start_next",
    "device_queue",
    "set_start_io_attributes",
    "start_io_cancel_routine",
    "start_next_packet",
    "start_next_packet_by_key",
    "start_packet",
]

#: ``async def routine(device, irp) -> None``: a StartIo routine.  It owns *irp* while it runs: it
#: completes it, passes it on, or (with ``start_next_on_return=False``) hands it to whatever will.
StartIoRoutine = Callable[[DeviceObject, Irp], Awaitable[object]]


# -- StartIo queues ----------------------------------------------------------------------------

_STOCK: Any = object()


def _check_routine(routine: object, what: str) -> None:
    if not callable(routine) or not inspect.iscoroutinefunction(routine):
        raise TypeError(f"{what} must be an async def (device, irp) coroutine function, got {routine!r}")


class StartIoQueue(_QueueBase):
    """A serial queue with its own StartIo routine: a *custom StartIo queue*, or a lane.

    A device may declare any number, each with a name and a routine; all run side by side in the
    device's task group, each one IRP at a time.  The classic use is a device that can read and
    write at the same time but only one of each: a ``"read"`` lane and a ``"write"`` lane.  The
    queue is a :class:`~airp.DeviceQueue` (:attr:`queue`) used as a Windows driver uses one for a
    custom StartIo: the first packet into an idle queue starts at once, others wait.

    Cancellation: a packet queued with the stock cancel routine (the default) that is cancelled
    while it waits leaves the queue and completes with STATUS_CANCELLED.  Once it has been taken
    out to be started its cancel routine, whichever it is, is disarmed (the ``non_cancelable``
    attribute, on by default here and on the system StartIo queue), and a cancel only sets
    ``irp.cancel``: the StartIo routine decides, and must finish it.  To be woken by a cancel while
    it waits for its device, it awaits :func:`~airp.wait_or_cancelled`.

    :param device: the device the queue belongs to.
    :param name: the queue's name, unique on the device (``None`` is the system queue's).
    :param routine: the StartIo coroutine function ``(device, irp) -> None``.
    :param start_next_on_return: start the next packet when the routine returns, unless it already
        started one (default).  With ``False``, whoever finishes the IRP calls
        :meth:`start_next_packet`, as Windows drivers call ``IoStartNextPacket``.
    :param deferred: ``IoSetStartIoAttributes``' DeferredStartIo: a :meth:`start_next_packet` made
        while the routine runs is recorded and carried out when it returns.
    :param non_cancelable: ``NonCancelable``: disarm an IRP's cancel routine when it is taken out of
        the queue to be started, whatever ``cancelable`` a start-next was given (default ``True``,
        as for the system StartIo queue).  ``False`` leaves it armed: the routine must then disarm
        it before completing the IRP (reference 7.5), or complete_request bug checks 0xC9/0x07.
    :raises TypeError: if *routine* is not a coroutine function.
    :raises ValueError: if the device already has a queue with that name.
    :raises RuntimeError: if the device is being removed.
    """

    __slots__ = (
        "_cancel",
        "_closing",
        "_current_level",
        "_deferred_next",
        "_in_start_io",
        "_ready",
        "_running",
        "_system",
        "_wakeup",
        "current_irp",
        "deferred",
        "device",
        "name",
        "non_cancelable",
        "queue",
        "routine",
        "start_next_on_return",
        "started",
        "tasks",
    )

    def __init__(
        self,
        device: DeviceObject,
        name: str | None,
        routine: StartIoRoutine,
        *,
        start_next_on_return: bool = True,
        deferred: bool = False,
        non_cancelable: bool = True,
        _system: bool = False,
    ) -> None:
        _check_routine(routine, "a StartIo routine")
        tasks = device_tasks(device)
        if not _system:
            if not isinstance(name, str) or not name:
                raise TypeError(f"a StartIo queue's name is a non-empty str, got {name!r}")
            if any(isinstance(q, StartIoQueue) and q.name == name for q in tasks._queues):
                raise ValueError(f"{device!r} already has a StartIo queue named {name!r}")
        self.device = device
        self.tasks = tasks
        self.name: str | None = name
        self.routine = routine
        self.start_next_on_return = start_next_on_return
        self.deferred = deferred
        self.non_cancelable = non_cancelable
        #: ``CurrentIrp``: the IRP taken to be started last, until the next start-next.
        self.current_irp: Irp | None = None
        self._current_level = 0  # the current IRP's location at this device, when it became current
        #: How many IRPs the routine has been called for.
        self.started = 0
        self.queue: DeviceQueue[Irp] = DeviceQueue()
        self._system = _system
        self._ready: deque[Irp] = deque()  # started, routine not yet called (normally 0 or 1)
        self._running: Irp | None = None  # the IRP the routine is processing
        self._in_start_io = False
        self._deferred_next: tuple[int | None, bool] | None = None
        self._wakeup: Waiter | None = None
        self._closing = False
        self._cancel: CancelRoutine = self._cancel_queued
        tasks._register(self)

    def __repr__(self) -> str:
        label = "system StartIo" if self._system else f"StartIo queue {self.name!r}"
        return f"<{label} of {self.device!r}: {self.queue!r}>"

    # -- the Windows calls -----------------------------------------------------------------------

    def start_packet(self, irp: Irp, *, key: int | None = None, cancel_routine: CancelRoutine | None = _STOCK) -> NtStatus:
        """``IoStartPacket``: start *irp* now if the queue is idle, else queue it.

        Marks *irp* pending.  If the queue was idle, *irp* becomes :attr:`current_irp` and is
        handed to the worker, which calls the routine at its next turn; otherwise it waits in
        :attr:`queue` (in key order if *key* is given).  A queued IRP that is already cancelled
        has its cancel routine called at once (reference 7.2 step 5).

        :param irp: an IRP at this device's stack location.
        :param key: a sort key (ULONG): queue by key (``KeInsertByKeyDeviceQueue``).
        :param cancel_routine: the cancel routine to arm while the IRP waits: by default the stock
            one (cancelled while queued: removed and completed with STATUS_CANCELLED); ``None``
            for none; or the driver's own plain function ``(device, irp)``, which should follow
            reference 7.5 (leave the current IRP alone, ``queue.remove_entry`` otherwise).
        :returns: STATUS_PENDING, always: return it from the dispatch routine.  If the device is
            being removed the IRP has been completed with the removal status already.
        :raises RuntimeError: if the device is not running yet (*irp* is then completed with
            STATUS_DEVICE_NOT_READY, so that it is not lost).
        :raises DeviceQueueError: if *irp* is already queued or being started here.
        :raises IrpStateError: if *irp* has no current stack location (not sent, or completed).
        :raises TypeError: if *irp* is not an IRP, or *cancel_routine* is a coroutine function;
            ValueError / TypeError for a bad *key*.
        """
        if type(irp) is not Irp and not isinstance(irp, Irp):
            raise must_be("start_packet(irp): irp", "an Irp", irp)
        tasks = self.tasks
        refused = None if tasks._state is DeviceState.RUNNING else tasks._refusal(irp)
        irp.mark_pending()
        if refused is not None:
            complete_request(irp, refused, 0)
            return STATUS_PENDING
        if key is not None:
            key = _check_key(key)
        queue = self.queue
        if irp in queue._keys or irp is self.current_irp or irp in self._ready:
            raise DeviceQueueError(f"{irp!r} is already queued or being started on {self!r}; a packet is started once")
        if cancel_routine is _STOCK:
            cancel_routine = self._cancel
            irp.cancel_routine = cancel_routine
        elif cancel_routine is not None:
            irp.set_cancel_routine(cancel_routine)
        inserted = queue.insert(irp) if key is None else queue.insert_by_key(irp, key)
        monitor = irp._monitor
        if monitor is not None:
            monitor.queued(irp, self.device, self.name)
        if not inserted:
            # _set_current and _wake written out, as in _next.
            self.current_irp = irp
            self._current_level = irp._index
            if self._system:
                self.device.current_irp = irp
            if self.non_cancelable:
                irp.cancel_routine = None
            self._ready.append(irp)
            event = self._wakeup
            if event is not None:
                self._wakeup = None
                event.set()
        elif cancel_routine is not None and irp.cancel:
            taken = irp.cancel_routine
            irp.cancel_routine = None
            if taken is not None:
                taken(self.device, irp)
        return STATUS_PENDING

    def start_next_packet(self, *, cancelable: bool = True, key: int | None = None) -> None:
        """``IoStartNextPacket`` / ``IoStartNextPacketByKey``: done with the current IRP, start the next.

        Clears :attr:`current_irp` and takes the next IRP out of the queue (by key if *key* is
        given: the first with a key at or above it, wrapping around); it becomes
        :attr:`current_irp` and the worker calls the routine for it once the running call (if
        any) has returned.  With nothing waiting, the queue becomes idle.  With the ``deferred``
        attribute, a call made while the routine runs is only recorded, and carried out (once,
        with the last key asked for) when the routine returns.

        :param cancelable: ``IoStartNextPacket``'s Cancelable: the IRPs in the queue have cancel
            routines.  Kept for fidelity; it changes nothing here: with the ``non_cancelable``
            attribute the next IRP's cancel routine is disarmed before it is started either way,
            and without it, it is left armed either way.
        :param key: start the next packet by key.
        :raises DeviceQueueError: if the queue is idle (Windows asserts: nothing was started).
        """
        if key is not None:
            key = _check_key(key)
        if not self.queue.busy:
            raise DeviceQueueError(
                f"start_next_packet on {self!r}, which is idle: there is no current packet to finish (Windows asserts"
                " Busy in KeRemoveDeviceQueue)"
            )
        if self.deferred and self._in_start_io:
            self._deferred_next = (key, cancelable)
            return
        self._next(key, cancelable)

    # -- internals ---------------------------------------------------------------------------------

    def _set_current(self, irp: Irp | None) -> None:
        self.current_irp = irp
        if irp is not None:
            self._current_level = irp._index
        if self._system:
            self.device.current_irp = irp

    def _wake(self) -> None:
        event = self._wakeup
        if event is not None:
            self._wakeup = None
            event.set()

    def _next(self, key: int | None, cancelable: bool) -> None:
        # _set_current and _wake written out: _next runs once per packet.
        self.current_irp = None
        if self._system:
            self.device.current_irp = None
        queue = self.queue
        irp = queue.remove() if key is None else queue.remove_by_key(key)
        if irp is None:
            return
        self.current_irp = irp
        self._current_level = irp._index
        if self._system:
            self.device.current_irp = irp
        if self.non_cancelable:
            irp.cancel_routine = None
        self._ready.append(irp)
        event = self._wakeup
        if event is not None:
            self._wakeup = None
            event.set()

    def _cancel_queued(self, device: DeviceObject | None, irp: Irp) -> None:
        # Reference 7.5: still queued -> ours to complete; being started -> the routine's.
        queue = self.queue
        if queue.busy and queue.remove_entry(irp):
            complete_request(irp, STATUS_CANCELLED, 0)

    def _device_started(self) -> None:
        label = "StartIo" if self._system else f"StartIo {self.name}"
        self.tasks._spawn(self._work, f"airp {label} worker for {self.device!r}")

    def _device_removing(self, status: NtStatus) -> None:
        self._closing = True
        self._wake()
        keep = _KeepFirst()
        queue = self.queue
        # Every waiting IRP leaves the queue and completes.  remove_entry's bookkeeping, _fail and
        # `with keep:` are written out: a removal may have a whole queue to finish, and their five
        # Python calls per IRP made it ~1.9x a driver draining the queue by hand.
        keys = queue._keys
        entries = queue._entries
        for irp in tuple(entries):
            if irp in keys:  # else taken meanwhile, by a cancel routine an upper completion ran
                del keys[irp]
                entries.remove(irp)
            irp.cancel_routine = None
            if irp._index <= irp.stack_count:  # not completed (that cancel routine may have)
                try:
                    complete_request(irp, status, 0)
                except Exception as error:  # _KeepFirst's rule: keep the first, finish the rest
                    if keep.error is None:
                        keep.error = error
        if not entries:
            queue._sorted = True
        ready = self._ready
        while ready:
            irp = ready.popleft()
            if irp is self.current_irp:
                self._set_current(None)
            with keep:
                _fail(irp, status)
        # The IRP the routine is processing, or the one it returned without finishing (left to be
        # completed elsewhere): the driver still has it, so it is asked to give it up.  Not one
        # the walk has handed back up past this device: that belongs to the driver above now.
        running = self._running
        if running is not None and not running.completed:
            with keep:
                self.tasks._cancel_held(self.name, running)
        for hold in self._holds():
            with keep:
                self.tasks._cancel_held(hold.queue, hold.irp)
        keep.raise_first()

    def _holds(self) -> list[_Hold]:
        """The current IRP, if the routine returned without finishing it and it is still here
        (or passed below): not once it has been completed or handed back up past this device."""
        irp = self.current_irp
        if irp is None or irp is self._running or irp._index > self._current_level:
            return []
        return [_Hold(self.name, irp, self._current_level)]

    def _stuck(self) -> list[tuple[Irp, str]]:
        found = [(irp, f"{self!r}, waiting") for irp in self.queue]
        found.extend((irp, f"{self!r}, started, its routine not yet called") for irp in self._ready)
        if self._running is not None:
            found.append((self._running, f"{self!r}, in its StartIo routine"))
        found.extend((hold.irp, f"{self!r}, the current IRP, held by the driver") for hold in self._holds())
        return found

    async def _work(self) -> None:
        ready = self._ready
        checkpoint = anyio.lowlevel.checkpoint
        while True:
            if ready:
                if not await self._start_io(ready.popleft()):
                    # A routine that never gave the event loop a turn (it completed its IRP
                    # without suspending) gets one checkpoint after it, like a memory-object
                    # stream's receive: it must not keep the loop to itself for a whole queue.
                    # One that suspended has already let the others run.
                    await checkpoint()
                continue
            if self._closing:
                return
            event = self._wakeup = new_waiter()
            await event.wait()

    async def _start_io(self, irp: Irp) -> bool:
        # Returns whether the routine suspended (True as well when it raised: the worker then
        # carries on as after a routine that gave the loop a turn, as it always did).
        level = irp._index
        self._running = irp
        self._in_start_io = True
        self.started += 1
        monitor = irp._monitor
        token = None
        if monitor is not None:
            monitor.dequeued(irp, self.device, self.name)
            token = current_request.set(irp)
        try:
            suspended = await _drive(self.routine(self.device, irp))
        except BaseException as error:
            if token is not None:
                current_request.reset(token)
            self._in_start_io = False
            self._running = None
            if isinstance(error, anyio.get_cancelled_exc_class()):
                # The device's task group is being torn down under us.
                _abandon(irp, level, self.tasks.removal_status, error)
                raise
            status = _abandon(irp, level, STATUS_INTERNAL_ERROR, error)
            self.tasks._report(RoutineFailure(self.device, self.name, irp, error, status))
            if isinstance(error, BugCheck) or not isinstance(error, Exception):
                raise
            self._after_start_io(irp, True)
            return False
        if token is not None:
            current_request.reset(token)
        self._in_start_io = False
        self._running = None
        self._after_start_io(irp, self.start_next_on_return)
        return suspended

    def _after_start_io(self, irp: Irp, start_next: bool) -> None:
        deferred = self._deferred_next
        if deferred is not None:
            self._deferred_next = None
            if self.queue.busy:
                self._next(*deferred)
        elif start_next and self.current_irp is irp and self.queue._busy:
            self._next(None, True)


@types.coroutine
def _drive(awaitable: Awaitable[object]) -> Generator[Any, Any, bool]:
    """``await awaitable``, telling whether it suspended: True if it yielded to the event loop.

    The expansion of ``yield from`` (PEP 380), written out so that the first step can be seen: a
    routine that returns at its first step never let the loop run anything else.  Every later
    step is passed through unchanged, sent values (trio's outcomes) and thrown exceptions
    (cancellation) alike.
    """
    steps = awaitable.__await__()
    try:
        yielded = steps.send(None)
    except StopIteration:
        return False
    while True:
        thrown: BaseException | None = None
        sent: Any = None
        try:
            sent = yield yielded
        except GeneratorExit:
            close = getattr(steps, "close", None)
            if close is not None:
                close()
            raise
        except BaseException as error:
            thrown = error
        try:
            yielded = steps.send(sent) if thrown is None else steps.throw(thrown)
        except StopIteration:
            return True
        finally:
            thrown = None


def _fail(irp: Irp, status: NtStatus) -> None:
    """Complete a waiting IRP on removal, unless its cancel routine has taken it."""
    # Cancel routines run synchronously, so one that was already taken has finished: if it left
    # the IRP (reference 7.5, "being started"), nobody else will complete it.
    irp.cancel_routine = None
    if not irp.completed:
        complete_request(irp, status, 0)


def _abandon(irp: Irp, level: int, status: NtStatus, error: BaseException) -> NtStatus | None:
    """A routine gave up on *irp* (raised or was cancelled): complete it if it still held it.

    It still holds it if the IRP is at the location it was started at: not completed (that moves it
    up), not passed on (that moves it down).  An IRP handed back by a lower driver's
    STATUS_MORE_PROCESSING_REQUIRED routine is back at that location too, and so still held.
    """
    if irp._index != level:
        return None
    irp.cancel_routine = None
    # What that completion raises is chained to *error* (the first bug check wins).
    complete_after_error(irp, error, status)
    return status


# -- the system StartIo queue (DriverStartIo) ---------------------------------------------------


def _system_queue(device: DeviceObject) -> StartIoQueue:
    tasks = device_tasks(device)
    queue: StartIoQueue | None = tasks._system
    if queue is None:
        routine = getattr(device.driver, "start_io", None)
        if routine is None:
            raise TypeError(
                f"{device.driver!r} has no StartIo routine: define `async def start_io(self, device, irp)` on the"
                " driver class (DriverObject->DriverStartIo), or assign one to driver.start_io"
            )
        _check_routine(routine, f"{device.driver!r}'s start_io")
        queue = StartIoQueue(
            device,
            None,
            routine,
            start_next_on_return=False,
            deferred=tasks.start_io_deferred,
            non_cancelable=tasks.start_io_non_cancelable,
            _system=True,
        )
        tasks._system = queue
    return queue


def start_packet(device: DeviceObject, irp: Irp, *, key: int | None = None, cancel_routine: CancelRoutine | None = None) -> NtStatus:
    """``IoStartPacket``: start *irp* on *device*'s StartIo routine now, or queue it.

    The routine is the driver's ``start_io`` method (``DriverObject->DriverStartIo``).  If the device
    is idle, *irp* becomes ``device.current_irp`` and the device's StartIo worker calls the routine
    with it at its next turn; otherwise it waits in the device queue (:func:`device_queue`), by *key*
    if given.  When the driver is done with the current IRP it calls :func:`start_next_packet`.

    Marks *irp* pending (a departure: Windows leaves that to the driver, which must do it first;
    doing both is harmless).

    :param key: a sort key (ULONG) to queue by (``KeInsertByKeyDeviceQueue``).
    :param cancel_routine: a cancel routine to arm while the IRP waits, ``(device, irp) -> None``;
        :func:`start_io_cancel_routine` is the pattern of reference 7.5, ready made.  ``None``
        (default): the IRP cannot be cancelled while queued.  It is disarmed when the IRP is
        started (NonCancelable, on by default: see :func:`set_start_io_attributes`), so StartIo
        owns its IRP outright and need not call ``set_cancel_routine(None)``.
    :returns: STATUS_PENDING, always: return it from the dispatch routine.  If the device is being
        removed, the IRP has already been completed with the removal status.
    :raises RuntimeError: if the device is not running (see :func:`run_device`); *irp* is then
        completed with STATUS_DEVICE_NOT_READY.
    :raises TypeError: if the driver has no ``start_io`` coroutine method.
    :raises DeviceQueueError: if *irp* is already queued or being started.
    """
    tasks = device_tasks(device)
    if tasks._system is None and tasks._state is not DeviceState.CREATED and tasks._state is not DeviceState.RUNNING:
        # Removed before it ever started a packet: there is no queue to create any more.
        if not isinstance(irp, Irp):
            raise must_be("start_packet(device, irp): irp", "an Irp", irp)
        irp.mark_pending()
        complete_request(irp, tasks.removal_status, 0)
        return STATUS_PENDING
    return _system_queue(device).start_packet(irp, key=key, cancel_routine=cancel_routine)


def start_next_packet(device: DeviceObject, cancelable: bool = False) -> None:
    """``IoStartNextPacket``: the driver is done with ``device.current_irp``; start the next one.

    Call it after completing the current IRP (or use :func:`complete_and_start_next`).  The next
    IRP from the device queue becomes ``device.current_irp`` and the StartIo routine is called
    for it once the running call (if any) returns; with none waiting the device becomes idle.

    :param cancelable: the driver uses cancel routines for queued IRPs.  Kept for fidelity: the
        NonCancelable attribute (on by default, :func:`set_start_io_attributes`) disarms the next
        IRP's cancel routine before StartIo sees it whatever this says.
    :raises DeviceQueueError: if the device is idle (Windows asserts).
    """
    _system_queue(device).start_next_packet(cancelable=cancelable)


def start_next_packet_by_key(device: DeviceObject, key: int, cancelable: bool = False) -> None:
    """``IoStartNextPacketByKey``: as :func:`start_next_packet`, taking the first IRP whose key is at
    least *key*, or the head if none is (Microsoft's wrap-around).

    :raises DeviceQueueError: if the device is idle.
    :raises TypeError, ValueError: if *key* is not a ULONG (``None`` included: that is
        :func:`start_next_packet`).
    """
    _system_queue(device).start_next_packet(cancelable=cancelable, key=_check_key(key))


def complete_and_start_next(
    device: DeviceObject,
    irp: Irp,
    status: int | None = None,
    information: int | None = None,
    *,
    cancelable: bool = False,
) -> None:
    """``IoCompleteRequest`` then ``IoStartNextPacket``: the end of a StartIo driver's work on *irp*.

    :raises BugCheck: as :func:`~airp.complete_request`.
    :raises DeviceQueueError: if the device is idle.
    :raises TypeError: if *device* is not a DeviceObject whose driver has a StartIo routine
        (checked before *irp* is completed).
    """
    queue = _system_queue(device)
    complete_request(irp, status, information)
    queue.start_next_packet(cancelable=cancelable)


def set_start_io_attributes(device: DeviceObject, *, deferred: bool = False, non_cancelable: bool | None = None) -> None:
    """``IoSetStartIoAttributes``: set the device's DeferredStartIo and NonCancelable attributes.

    Deferred is only ever added, never cleared (as in Windows).  NonCancelable is **on by
    default** in airp (a departure): a packet taken out to be started, directly on
    an idle device or by any start-next, has its cancel routine disarmed before StartIo sees it,
    as a custom :class:`StartIoQueue` does by default, so a StartIo routine that completes its IRP
    without ``set_cancel_routine(None)`` does not stop the device with 0xC9/0x07.  Windows' default
    (the routine stays armed on an IRP started on an idle device, or by a start-next that is not
    cancelable; reference 7.2 step 4 and 7.3) is asked for with ``non_cancelable=False``.

    :param deferred: a start-next made while StartIo runs takes effect when it returns.
    :param non_cancelable: ``True``: disarm a started packet's cancel routine (the default);
        ``False``: leave it armed, as Windows does without the attribute (StartIo must then disarm
        it itself, reference 7.5); ``None``: leave the setting as it is.
    """
    tasks = device_tasks(device)
    tasks.start_io_deferred = tasks.start_io_deferred or deferred
    if non_cancelable is not None:
        tasks.start_io_non_cancelable = bool(non_cancelable)
    queue = tasks._system
    if queue is not None:
        queue.deferred = tasks.start_io_deferred
        queue.non_cancelable = tasks.start_io_non_cancelable


def device_queue(device: DeviceObject) -> DeviceQueue[Irp]:
    """``DeviceObject->DeviceQueue``: the device queue of *device*'s system StartIo.

    :raises TypeError: if the driver has no ``start_io`` routine.
    """
    return _system_queue(device).queue


def start_io_cancel_routine(device: DeviceObject | None, irp: Irp) -> None:
    """A ready-made cancel routine for IRPs started with :func:`start_packet` (reference 7.5).

    If *irp* is still waiting in the device queue, it is removed and completed with
    STATUS_CANCELLED.  If it is the current IRP (being started or processed), it is left alone: the
    StartIo routine must check ``irp.cancel`` and finish it.  With the NonCancelable attribute (the
    default) the routine is disarmed when the IRP is started, so it only ever runs for a queued
    IRP; the current-IRP branch is for a device that turned the attribute off.
    """
    if device is None:
        return
    queue = _system_queue(device)
    if irp is not queue.current_irp:
        queue._cancel_queued(device, irp)
