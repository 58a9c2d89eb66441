"""The task group every device runs its queue workers in: ``run_device`` and ``DeviceTasks``.

StartIo queues (:mod:`airp._shell._startio`) and KMDF-style dispatch queues
(:mod:`airp._shell._kmdf_queue`) both run their workers here, and report the routines that raised
here (:class:`RoutineFailure`, :class:`DeviceRoutineError`).

``async with run_device(device):`` runs the device: it opens an anyio task group for the workers of
every queue the device declares (its system StartIo queue, named :class:`StartIoQueue` lanes, and
:class:`~airp.IoQueue` dispatch queues), including queues declared later.  Leaving the block removes
the device (see :meth:`DeviceTasks.remove`): the queues stop accepting, queued IRPs complete with
``removal_status`` (STATUS_NO_SUCH_DEVICE), IRPs being processed are cancelled with
:func:`~airp.cancel_irp`, and the block ends only when every worker has finished and every IRP the
driver still holds outside its routines (a KMDF request a handler kept, a StartIo IRP left to be
completed elsewhere) has been cancelled and given up, or disowned after the cancel-wait limit.
Cancelling the block from outside begins the removal at once, so that queued IRPs never wait for
the block's body.
"""

from __future__ import annotations

import enum
import math
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

import anyio

from .._machine._arguments import check_plain_function, check_seconds
from .._machine._bugcheck import BugCheck
from .._machine._cancel import cancel_irp
from .._machine._completion import complete_request
from .._machine._device import DeviceObject
from .._machine._irp import Irp, IrpStateError
from .._machine._misuse import must_be
from .._machine._status import STATUS_DEVICE_NOT_READY, STATUS_INTERNAL_ERROR, STATUS_NO_SUCH_DEVICE, NtStatus
from ._requester_cancel import DriverCancelTimeoutWarning, _caller_stacklevel, get_cancel_wait_limit, holding_device
from ._run_clock import WakeableDelay, add_deadlock_reporter
from ._virtual_time import DeadlockFindings
from ._waiter import Waiter, new_waiter

__all__ = [
    "DeviceRoutineError",
    "DeviceState",
    "DeviceTasks",
    "RoutineFailure",
    "device_tasks",
    "run_device",
    "wait_or_cancelled",
]


class DeviceState(enum.Enum):
    """Where a device's task group is in its life."""

    #: Queues may be declared; no I/O is accepted yet (starting a packet raises).
    CREATED = "created"
    #: ``run_device`` is active: queues accept I/O and workers run.
    RUNNING = "running"
    #: Removal has begun: queues refuse new IRPs, workers finish what they hold.
    REMOVING = "removing"
    #: The task group has ended.  IRPs still arriving complete with the removal status.
    REMOVED = "removed"


@dataclass(frozen=True, slots=True)
class RoutineFailure:
    """A StartIo routine or queue handler raised.

    :ivar device: the device whose queue ran the routine.
    :ivar queue: the queue's name (``None`` for the system StartIo queue).
    :ivar irp: the IRP the routine was processing.
    :ivar error: the exception it raised.
    :ivar status: what airp completed the IRP with (STATUS_INTERNAL_ERROR), or ``None`` if the
        routine no longer held the IRP when it raised (it had completed it or passed it on).
    """

    device: DeviceObject
    queue: str | None
    irp: Irp
    error: BaseException
    status: NtStatus | None


class DeviceRoutineError(Exception):
    """Raised when a device's ``run_device`` block ends, if routines failed and nobody was told.

    Only raised when no ``on_error`` callback was given to :func:`run_device`; with a callback,
    each failure goes to it as it happens instead.  The first failure's exception is the
    ``__cause__``.

    :ivar failures: every :class:`RoutineFailure`, in order.
    """

    def __init__(self, failures: tuple[RoutineFailure, ...]) -> None:
        self.failures = failures
        first = failures[0]
        where = first.queue if first.queue is not None else "StartIo"
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        super().__init__(
            f"{len(failures)} routine(s) of {first.device!r} raised; first: {where} on {first.irp!r}:"
            f" {type(first.error).__name__}: {first.error}{more}"
        )


class _KeepFirst:
    """``with keep:`` around each step of a loop that must run to its end, then ``keep.raise_first()``.

    A removal completes or cancels many IRPs, and each completion can run an upper driver's
    completion routine and each cancel a cancel routine.  One of them raising must not leave the
    IRPs after it in the loop behind: the step's exception (an :class:`Exception`, bug checks
    included) is kept, the loop goes on, and the first one kept is raised at the end.  Anything
    else (a cancellation, KeyboardInterrupt) propagates at once.
    """

    __slots__ = ("error",)

    def __init__(self) -> None:
        self.error: Exception | None = None

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> bool:
        if not isinstance(exc, Exception):
            return False
        if self.error is None:
            self.error = exc
        return True

    def raise_first(self) -> None:
        if self.error is not None:
            raise self.error


class _QueueBase:
    """What a device's task group needs of each of its queues."""

    __slots__ = ()

    def _device_started(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _device_removing(self, status: NtStatus) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _holds(self) -> list[_Hold]:  # pragma: no cover - abstract
        """The IRPs the driver still holds through this queue once its workers have ended."""
        raise NotImplementedError

    def _stuck(self) -> list[tuple[Irp, str]]:  # pragma: no cover - abstract
        """The IRPs waiting in this queue or held through it, each with where: for a deadlock report."""
        raise NotImplementedError


class _HasIrp(Protocol):
    """What :func:`wait_or_cancelled` reads of a KMDF request (:class:`~airp.Request`)."""

    @property
    def irp(self) -> Irp: ...


class _Owned(Protocol):
    """What a :class:`_Hold` reads of a KMDF request (:class:`~airp.Request`), without naming its module."""

    @property
    def owned(self) -> bool: ...


class _Hold:
    """An IRP a driver still holds when its device's workers have ended, and how to tell it let go.

    The driver has let go once the IRP has left its location upwards (completed, or handed back
    past it by the completion walk) or, for a KMDF request, once the queue has been told it is
    finished.  An IRP the driver passed down from outside a routine is still held (below), as the
    remove lock of reference 8.1 still counts it.
    """

    __slots__ = ("irp", "level", "queue", "request")

    def __init__(self, queue: str | None, irp: Irp, level: int, request: _Owned | None = None) -> None:
        self.queue = queue
        self.irp = irp
        self.level = level
        self.request = request

    def settled(self) -> bool:
        request = self.request
        return self.irp._index > self.level or (request is not None and not request.owned)


class DeviceTasks:
    """A device's task group: where the workers of all its queues run.

    Get it with :func:`run_device` (to run the device) or :func:`device_tasks` (to look at it).
    Entering it (``async with``) starts the workers of every queue declared so far; queues declared
    while it runs start their workers at once.  Leaving it removes the device: see :meth:`remove`
    for what happens to IRPs, then the exit waits until every worker has finished, and then for
    the IRPs the driver still holds outside its routines (cancelled, and waited for, shielded, for
    at most the run's cancel-wait limit; one still held past it is disowned with a
    :class:`~airp.DriverCancelTimeoutWarning`).  :attr:`state` becomes REMOVED only then.  If the
    task group is cancelled from outside, the removal begins at once.  A device runs once: a
    removed device cannot be run again.

    :ivar device: the device.
    :ivar removal_status: what queued IRPs and late arrivals complete with on removal
        (STATUS_NO_SUCH_DEVICE unless :func:`run_device` was told otherwise).
    :ivar grace: seconds the exit waits for workers to finish their current IRP before cancelling
        them (``None``: wait as long as it takes, as ``IoReleaseRemoveLockAndWait`` does).
    :ivar on_error: called with each :class:`RoutineFailure` as it happens, or ``None``.
    :ivar failures: every :class:`RoutineFailure` so far.
    """

    __slots__ = (
        "__weakref__",
        "_all_done",
        "_queues",
        "_requests",
        "_settling",
        "_state",
        "_system",
        "_tg",
        "_workers",
        "device",
        "failures",
        "grace",
        "on_error",
        "removal_status",
        "start_io_deferred",
        "start_io_non_cancelable",
    )

    def __init__(self, device: DeviceObject) -> None:
        if not isinstance(device, DeviceObject):
            raise TypeError(f"a device's task group needs a DeviceObject, got {type(device).__name__} {device!r}")
        self.device = device
        self.removal_status: NtStatus = STATUS_NO_SUCH_DEVICE
        self.grace: float | None = None
        self.on_error: Callable[[RoutineFailure], object] | None = None
        self.failures: list[RoutineFailure] = []
        self.start_io_deferred = False
        # Started packets lose their cancel routine before StartIo sees them.
        self.start_io_non_cancelable = True
        self._state = DeviceState.CREATED
        self._tg: anyio.abc.TaskGroup | None = None
        self._queues: list[_QueueBase] = []
        self._system: Any = None
        self._workers = 0
        self._all_done: anyio.Event | None = None
        # IRPs alive in this device's dispatch queues: their Request once one exists, else the
        # queue holding them (duplicate detection).
        self._requests: dict[Irp, object] = {}
        # Set while the exit waits for the IRPs the driver still holds: whatever lets one go sets it.
        self._settling: anyio.Event | None = None

    @property
    def state(self) -> DeviceState:
        """The device's :class:`DeviceState`."""
        return self._state

    @property
    def workers(self) -> int:
        """How many worker tasks are alive: at most one per StartIo queue, and per dispatch queue
        what its dispatch type allows; never one per IRP."""
        return self._workers

    @property
    def queues(self) -> tuple[object, ...]:
        """Every queue declared on the device (StartIo queues and dispatch queues), in order."""
        return tuple(self._queues)

    def __repr__(self) -> str:
        return f"<DeviceTasks {self.device!r} {self._state.value}, {self._workers} worker(s)>"

    # -- running ---------------------------------------------------------------------------------

    async def __aenter__(self) -> DeviceTasks:
        if self._state is not DeviceState.CREATED:
            raise RuntimeError(
                f"{self.device!r} is {self._state.value}: a device's task group runs once, and a removed device"
                " does not come back (create a new device)"
            )
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        self._state = DeviceState.RUNNING
        tg.start_soon(self._watch_for_cancellation, name=f"airp removal watch for {self.device!r}")
        for queue in self._queues:
            queue._device_started()
        add_deadlock_reporter(self)
        return self

    def _report_deadlock(self, findings: DeadlockFindings) -> None:
        # Asked by the run's virtual clock when the run deadlocks: what waits in the queues.
        stuck = [entry for queue in self._queues for entry in queue._stuck()]
        findings.queued.extend(stuck)
        if self._state is DeviceState.REMOVING:
            held = f": {len(stuck)} IRP(s) listed above" if stuck else ""
            findings.waits.append(f"the removal of {self.device!r} waits for its queues' routines to end{held}")

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        tg = self._tg
        assert tg is not None
        failure: BaseException | None = None
        try:
            self.remove()
        except BaseException as error:  # a completion routine above us raised, say
            failure = error
        if exc_type is None and failure is None and self._workers:
            try:
                with anyio.move_on_after(math.inf if self.grace is None else self.grace):
                    event = self._all_done = anyio.Event()
                    await event.wait()
            except BaseException as error:  # cancelled from outside, or a worker crashed
                failure = error
        # Whatever is still running now is cancelled: its IRP completes with the removal status.
        tg.cancel_scope.cancel()
        try:
            if failure is not None:
                if not await _exit_unwrapped(tg, type(failure), failure, failure.__traceback__):
                    raise failure
                suppressed: bool | None = False
            else:
                suppressed = await _exit_unwrapped(tg, exc_type, exc, tb)
        finally:
            self._tg = None
            try:
                await self._settle()
            finally:
                self._state = DeviceState.REMOVED
        if self.failures and self.on_error is None and exc_type is None:
            raise DeviceRoutineError(tuple(self.failures)) from self.failures[0].error
        return suppressed

    def remove(self) -> None:
        """Begin removing the device (``IRP_MN_REMOVE_DEVICE``'s queue duties, reference 8.2).

        Synchronous and idempotent; leaving the ``run_device`` block calls it.  Every queue stops
        accepting: IRPs that arrive from now on complete at once with :attr:`removal_status`.  IRPs
        waiting in a queue complete with :attr:`removal_status` (their cancel routines disarmed
        first).  IRPs a routine is processing are cancelled with :func:`~airp.cancel_irp`, which
        runs their cancel routine if one is armed and sets the sticky ``irp.cancel`` flag the
        routine can check; the routine still finishes them.  So are IRPs the driver holds outside
        its routines (a KMDF request a handler kept, a StartIo IRP left to be completed
        elsewhere), which the end of the block then waits for.  Workers end once idle.

        Every queue and every IRP is dealt with even if completing or cancelling one raises (an
        upper driver's completion routine); the first such exception is raised at the end.  A
        cancel routine of this driver that raises is reported as a :class:`RoutineFailure`
        instead, its IRP completed with STATUS_INTERNAL_ERROR.

        :raises RuntimeError: if the device has not been started.
        :raises Exception: the first exception an upper completion routine raised, once every IRP
            has been dealt with.
        """
        if self._state is DeviceState.CREATED:
            raise RuntimeError(f"{self.device!r} is not running: nothing to remove")
        if self._state is not DeviceState.RUNNING:
            return
        self._state = DeviceState.REMOVING
        keep = _KeepFirst()
        for queue in self._queues:
            with keep:
                queue._device_removing(self.removal_status)
        keep.raise_first()

    async def _watch_for_cancellation(self) -> None:
        """Begin the removal as soon as the device's task group is cancelled from outside.

        The task group is cancelled when the ``run_device`` block is (a ``move_on_after`` around
        it, its task cancelled) or when a worker crashed.  Without this the removal would only
        begin when the block's body has unwound, and a body that awaits an IRP still queued here
        (a requester in a task group inside the block) would wait out its cancel-wait limit for
        an IRP that only the removal completes: it would be waiting for itself.  Not counted in
        :attr:`workers`; it ends when the exit cancels the task group, the removal already begun.
        """
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            if self._state is DeviceState.RUNNING:
                self.remove()
            raise

    async def _settle(self) -> None:
        """Cancel the IRPs the driver still holds once its workers have ended, and wait for them.

        What a driver holds outside its routines (a KMDF request a handler kept, a StartIo IRP
        left to be completed elsewhere) is cancelled with :func:`~airp.cancel_irp` (a request's
        ``mark_cancelable`` callback runs), then waited for, shielded, for at most the run's
        cancel-wait limit: ``IoReleaseRemoveLockAndWait``, bounded as a requester's wait after a
        cancel is.  One still held past the limit is disowned: the device stops waiting for it and
        a :class:`~airp.DriverCancelTimeoutWarning` names the device that holds it.  The request
        stays the driver's: completing it later still works, with nobody waiting.

        A cancel routine that raises here is reported as a :class:`RoutineFailure`; its IRP has
        been completed with STATUS_INTERNAL_ERROR by :func:`~airp.cancel_irp`.
        """
        holds = [hold for queue in self._queues for hold in queue._holds()]
        if not holds:
            return
        with anyio.CancelScope(shield=True):
            for hold in holds:
                if not hold.settled():
                    self._cancel_held(hold.queue, hold.irp)
            holds = [hold for hold in holds if not hold.settled()]
            if not holds:
                return
            limit = get_cancel_wait_limit()
            with anyio.move_on_after(limit):
                async with anyio.create_task_group() as watchers:
                    for hold in holds:
                        watchers.start_soon(self._watch_completion, hold.irp)
                    while holds:
                        # Nothing runs between the check and the wait, so no wake-up is missed.
                        event = self._settling = anyio.Event()
                        await event.wait()
                        holds = [hold for hold in holds if not hold.settled()]
                    watchers.cancel_scope.cancel()
            self._settling = None
            for hold in holds:
                if not hold.settled():
                    irp = hold.irp
                    warnings.warn(
                        DriverCancelTimeoutWarning(irp, holding_device(irp), limit), stacklevel=_caller_stacklevel()
                    )

    def _cancel_held(self, queue: str | None, irp: Irp) -> None:
        """Cancel an IRP the driver holds, on removal; a cancel routine that raises is reported.

        The removal, not a caller, runs the cancel routine here, so its failure goes where the
        failures of queue routines go (``on_error``, or :class:`DeviceRoutineError`), with the
        IRP already completed with STATUS_INTERNAL_ERROR.  A bug check propagates.
        """
        try:
            cancel_irp(irp, reason="device removed")
        except Exception as error:
            if isinstance(error, BugCheck):
                raise
            status = STATUS_INTERNAL_ERROR if irp.routine_error is error else None
            self._report(RoutineFailure(self.device, queue, irp, error, status))

    async def _watch_completion(self, irp: Irp) -> None:
        # A held IRP that the driver completes to the top wakes its waiter; one handed back to an
        # upper driver's STATUS_MORE_PROCESSING_REQUIRED routine does not, and a KMDF request's
        # Request.complete wakes the settle directly (IoQueue._release).
        if not irp.completed:
            waiter: Waiter | None = irp._waiter  # type: ignore[assignment]
            if waiter is None:
                waiter = irp._waiter = new_waiter()
            await waiter.wait()
        self._let_go()

    def _let_go(self) -> None:
        """Something the driver held has been let go: wake the exit if it is waiting for that."""
        event = self._settling
        if event is not None:
            event.set()

    # -- for the queues ----------------------------------------------------------------------------

    def _register(self, queue: _QueueBase) -> None:
        if self._state is DeviceState.REMOVING or self._state is DeviceState.REMOVED:
            raise RuntimeError(f"cannot declare a queue on {self.device!r}: it is {self._state.value}")
        self._queues.append(queue)
        if self._state is DeviceState.RUNNING:
            queue._device_started()

    def _refusal(self, irp: Irp) -> NtStatus | None:
        """``None`` if the device accepts I/O, else the status to complete an arrival with.

        On a device that has not been started, *irp* is completed with STATUS_DEVICE_NOT_READY
        (so that it is not lost) and RuntimeError is raised: the driver forgot ``run_device``.
        """
        state = self._state
        if state is DeviceState.RUNNING:
            return None
        if state is DeviceState.CREATED:
            if not irp.completed:
                irp.cancel_routine = None
                complete_request(irp, STATUS_DEVICE_NOT_READY, 0)
            raise RuntimeError(
                f"{self.device!r} is not running, so {irp!r} was completed with STATUS_DEVICE_NOT_READY: its queue"
                " workers run in its task group; wrap the I/O in `async with airp.run_device(device):`"
            )
        return self.removal_status

    def _spawn(self, worker: Callable[[], Awaitable[None]], name: str) -> None:
        tg = self._tg
        assert tg is not None
        self._workers += 1
        tg.start_soon(self._run_worker, worker, name=name)

    async def _run_worker(self, worker: Callable[[], Awaitable[None]]) -> None:
        try:
            await worker()
        finally:
            self._workers -= 1
            if self._workers == 0 and self._all_done is not None:
                self._all_done.set()

    def _report(self, failure: RoutineFailure) -> None:
        self.failures.append(failure)
        if self.on_error is not None:
            self.on_error(failure)


def device_tasks(device: DeviceObject) -> DeviceTasks:
    """The task group of *device* (created, not yet running, on first use).

    :raises TypeError: if *device* is not a :class:`~airp.DeviceObject`.
    """
    try:
        tasks = device.tasks
    except AttributeError:
        # Only on the error path: every queue operation comes through here.
        raise must_be("device", "a DeviceObject", device) from None
    if tasks is None:
        tasks = device.tasks = DeviceTasks(device)
    return tasks  # type: ignore[no-any-return]


def run_device(
    device: DeviceObject,
    *,
    removal_status: int | None = None,
    grace: float | None = None,
    on_error: Callable[[RoutineFailure], object] | None = None,
) -> DeviceTasks:
    """Run *device*: ``async with airp.run_device(device): ...``.

    Opens the device's task group (:class:`DeviceTasks`), starts the workers of its queues, and on
    leaving the block removes the device, waits for the workers to finish, then cancels and waits
    for the IRPs the driver still holds outside its routines (see :class:`DeviceTasks`).

    :param removal_status: what queued IRPs and late arrivals complete with when the device is
        removed.  Default STATUS_NO_SUCH_DEVICE: what Microsoft's WDM samples (toaster, pcidrv)
        complete their queued requests with when the device is removed, and what they answer a
        removed device's new requests with.  STATUS_DELETE_PENDING is the remove lock's answer,
        and STATUS_CANCELLED would read as "your request was cancelled", which nobody asked for.
    :param grace: seconds to wait, on leaving the block, for routines to finish the IRPs they
        hold before cancelling them; ``None`` (default) waits as long as it takes.  IRPs the driver
        holds outside any routine are waited for afterwards, bounded by the run's cancel-wait
        limit (:func:`~airp.get_cancel_wait_limit`) rather than by *grace*.
    :param on_error: called with each :class:`RoutineFailure` (a routine raised) as it happens.
        Without it, failures are raised as a :class:`DeviceRoutineError` when the block ends.
    :returns: the device's :class:`DeviceTasks`, to be entered with ``async with``.
    :raises RuntimeError: (on entering) if the device has already run.
    :raises TypeError: if *device* is not a DeviceObject, *removal_status* not an NTSTATUS,
        *grace* not a number, or *on_error* not a plain function (it is called as failures
        happen, inside the device's workers: a coroutine function's body would never run).
    :raises ValueError: for a negative or NaN *grace*, or a *removal_status* out of 32 bits.

    On cancellation: if the block is cancelled, the removal begins at once (queued IRPs complete
    with the removal status without waiting for the block's body to unwind) and the workers are
    cancelled too; a routine cancelled in the middle of an IRP has that IRP completed with the
    removal status.  The exit then still waits, shielded and bounded by the cancel-wait limit,
    for the IRPs the driver holds outside its routines, and the cancellation propagates after.
    """
    if not isinstance(device, DeviceObject):
        raise must_be("run_device(device): device", "a DeviceObject", device)
    # Everything checked before anything changes: on_error, say, would otherwise be found out
    # only at the first routine failure.
    if removal_status is not None:
        if isinstance(removal_status, bool) or not isinstance(removal_status, int):
            raise must_be("removal_status", "an NTSTATUS (an int) or None", removal_status)
        removal_status = NtStatus(removal_status)
    check_seconds("grace", grace, optional=True)
    check_plain_function(
        "on_error", on_error, signature="(failure) -> None", why="it is called as each failure happens, and cannot await"
    )
    tasks = device_tasks(device)
    if tasks._state is not DeviceState.CREATED:
        raise RuntimeError(f"{device!r} is {tasks._state.value}: a device's task group runs once")
    if removal_status is not None:
        tasks.removal_status = removal_status
    tasks.grace = grace
    tasks.on_error = on_error
    return tasks


async def _exit_unwrapped(
    tg: anyio.abc.TaskGroup, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
) -> bool | None:
    """Leave the device's task group, raising *exc* itself rather than a group holding only it.

    Workers never raise ordinary exceptions, so a group holding only the block's own exception
    (or the removal's) is just anyio's wrapping: that exception goes through as it was, as if the
    task group were not there: with its own ``__cause__``, its own ``__context__`` (the exception
    it was raised while handling, often the real error: a bug check that a handle's close turned
    into a :class:`DriverCancelTimeoutWarning` under ``filterwarnings = error``) and whether that
    context is shown.  Neither the group nor this re-raise leaves a mark on the chain.
    """
    try:
        return await tg.__aexit__(exc_type, exc, tb)
    except BaseException as group:
        leaves = getattr(group, "exceptions", None)
        if exc is not None and leaves is not None and len(leaves) == 1 and leaves[0] is exc:
            # A bare ``raise exc`` here makes the group its context, and ``raise exc from ...``
            # hides the context it had: put back what it had (the cause first, since setting
            # ``__cause__`` also sets ``__suppress_context__``).
            context, cause, suppress = exc.__context__, exc.__cause__, exc.__suppress_context__
            try:
                raise exc
            finally:
                exc.__context__ = context
                exc.__cause__ = cause
                exc.__suppress_context__ = suppress
        raise


# -- a cancellable wait for StartIo routines and queue handlers ----------------


async def wait_or_cancelled(irp: Irp | _HasIrp, seconds: float) -> bool:
    """Wait *seconds* of device time for *irp*, waking at once if the IRP is cancelled.

    For a StartIo routine or a queue handler that holds its IRP with no cancel routine armed (a
    started packet, a presented request): the stand-in for waiting on the hardware with a cancel
    routine that aborts the transfer (reference 6.2, 7.5).  It arms a cancel routine of its own
    for the length of the wait, which only wakes the waiter (the IRP stays the caller's: the
    routine does not complete it), and disarms it before returning, so the caller then owns the
    IRP exactly as before and completes it::

        async def start_io(self, device, irp):
            if await airp.wait_or_cancelled(irp, 0.010):     # the transfer's 10 ms
                airp.complete_and_start_next(device, irp, STATUS_CANCELLED, 0)
            else:
                airp.complete_and_start_next(device, irp, STATUS_SUCCESS, length)

    No task is created: the wait is a sleep in the caller's task that the cancel routine ends early;
    on virtual time it sleeps on the clock's own timer heap, as :func:`~airp.delay` does.

    :param irp: the IRP, or a :class:`~airp.Request` (its ``irp`` is used).
    :param seconds: how long to wait, >= 0 (``math.inf``: until cancelled).
    :returns: True if the IRP is cancelled (``irp.cancel``), whether before the wait (then it
        returns after one checkpoint) or during it (then it returns as soon as
        :func:`~airp.cancel_irp` runs); False if the time ran out first.
    :raises TypeError: if *irp* is neither an IRP nor has one, or *seconds* is not a number.
    :raises ValueError: if *seconds* is negative or NaN.
    :raises IrpStateError: if the IRP has completed, or already has a cancel routine (a custom
        StartIo queue with ``non_cancelable=False``, a request marked cancelable): disarm it
        first, since an IRP has one cancel routine.

    On cancellation (the caller's task is cancelled, say by a device removal's ``grace``): the
    cancel routine is disarmed and the cancellation propagates; the IRP is the caller's as before.
    """
    target = irp if isinstance(irp, Irp) else getattr(irp, "irp", None)
    if not isinstance(target, Irp):
        raise TypeError(f"wait_or_cancelled needs an Irp or a Request, got {type(irp).__name__} {irp!r}")
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"seconds must be a number of seconds, got {type(seconds).__name__} {seconds!r}")
    if not seconds >= 0:
        raise ValueError(f"seconds must be >= 0 (math.inf to wait until cancelled), got {seconds!r}")
    if target.completed:
        raise IrpStateError(f"cannot wait on {target!r}: it has completed")
    if target.cancel_routine is not None:
        raise IrpStateError(
            f"cannot wait on {target!r}: it already has cancel routine {target.cancel_routine!r}, and an IRP has"
            " one; wait_or_cancelled arms its own for the wait (disarm, or unmark the request, first)"
        )
    if target.cancel:
        await anyio.lowlevel.checkpoint()
        return True
    waiting = WakeableDelay(seconds)

    def wake(device: DeviceObject | None, irp: Irp) -> None:
        # Taken by cancel_irp: wake the waiter, which still owns the IRP and will complete it.
        waiting.wake()

    target.cancel_routine = wake
    try:
        await waiting.wait()
    finally:
        if target.cancel_routine is wake:
            target.cancel_routine = None
    return target.cancel
