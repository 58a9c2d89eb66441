"""KMDF-style dispatch queues: sequential, parallel and manual I/O queues (reference 9.1 to 9.4).

An :class:`IoQueue` holds requests for one device and presents them to the driver's handler, a
coroutine ``handler(queue, request)``, following the queue's dispatch type:

- **sequential**: one request at a time; the next is presented only after the current one has
  been completed, forwarded to another queue, or passed on to a lower driver;
- **parallel**: as soon as they arrive, up to ``limit`` outstanding at once (no limit by default);
- **manual**: never presented; the driver takes requests with :meth:`IoQueue.retrieve_next_request`
  (optionally told by ``ready_notify`` when the queue stops being empty).

It is built on the same machinery as StartIo queues (:mod:`airp._shell._startio`): its workers run in the
device's task group, sleep on lazily created events, and are created on demand up to what the
dispatch type allows (one for sequential, ``limit`` for parallel), never one per request; queued
requests carry a cancel routine armed with the arm-then-recheck rule (reference 6.3); a device
removal completes what is queued with the device's removal status.

A request is presented as a :class:`Request` (``WDFREQUEST``), which the driver completes with
:meth:`Request.complete`.  Completing the IRP directly with :func:`~airp.complete_request` also
works if it happens before the handler returns; after that, only ``Request.complete`` tells the
queue the request is done (a sequential queue would otherwise wait for it forever).

Departures from KMDF:

- Requests are presented from the queue's worker tasks, never from inside the dispatch routine
  that queued them (KMDF may call the handler in the sender's thread): the dispatch routine always
  returns STATUS_PENDING first.
- When the device is removed, queued requests complete with the device's removal status
  (STATUS_NO_SUCH_DEVICE, as every airp queue does) rather than KMDF's STATUS_CANCELLED from the
  purge of a power-managed queue.
- A queue has one handler for every request type; route by ``request.major`` inside it.
"""

from __future__ import annotations

import enum
import inspect
import math
import warnings
from collections import deque
from collections.abc import Awaitable, Callable

import anyio

from .._machine._arguments import check_plain_function
from .._machine._bugcheck import BugCheck
from .._machine._codes import StackControl
from .._machine._completion import complete_after_error, complete_request
from .._machine._device import DeviceObject
from .._machine._file import FileObject
from .._machine._irp import CancelRoutine, Irp, IrpStateError
from .._machine._misuse import must_be
from .._machine._monitor import current_request
from .._machine._status import (
    STATUS_CANCELLED,
    STATUS_INTERNAL_ERROR,
    STATUS_INVALID_DEVICE_REQUEST,
    STATUS_INVALID_DEVICE_STATE,
    STATUS_PENDING,
    STATUS_SUCCESS,
    STATUS_WDF_BUSY,
    NtStatus,
)
from ._device_tasks import (
    DeviceState,
    RoutineFailure,
    _Hold,
    _KeepFirst,
    _QueueBase,
    device_tasks,
)

__all__ = ["DispatchType", "IoHandler", "IoQueue", "QueueState", "Request"]

_PENDING_RETURNED = int(StackControl.PENDING_RETURNED)

#: ``async def handler(queue, request) -> None``: ``EvtIoDefault``.  It completes the request,
#: forwards it, passes its IRP on, or keeps it and completes it later with ``request.complete``.
IoHandler = Callable[["IoQueue", "Request"], Awaitable[object]]


class DispatchType(enum.Enum):
    """How an :class:`IoQueue` presents its requests (``WDF_IO_QUEUE_DISPATCH_TYPE``)."""

    SEQUENTIAL = "sequential"
    PARALLEL = "parallel"
    MANUAL = "manual"


class QueueState(enum.Enum):
    """The last state operation applied to an :class:`IoQueue` (reference 9.2).

    ======================  ====================  =====================  ====================
    state                   new arrivals          already queued         delivered requests
    ======================  ====================  =====================  ====================
    ``STARTED``             accepted              delivered              -
    ``STOPPED``             accepted, held        held                   untouched
    ``DRAINED``             INVALID_DEVICE_STATE  still delivered        untouched
    ``PURGED``              INVALID_DEVICE_STATE  cancelled              cancelable: cancelled
    ``STOPPED_PURGED``      accepted, held        cancelled              cancelable: cancelled
    ======================  ====================  =====================  ====================
    """

    STARTED = "started"
    STOPPED = "stopped"
    DRAINED = "drained"
    PURGED = "purged"
    STOPPED_PURGED = "stopped and purged"


_QUEUED = 0
_DELIVERED = 1
_GONE = 2


class Request:
    """``WDFREQUEST``: an IRP held by an :class:`IoQueue`, and later by the driver.

    :ivar irp: the IRP.
    :ivar queue: the queue the request is in or was last presented by.
    :ivar file_object: the file object of the IRP's stack location at this device.
    """

    __slots__ = ("_cancel_callback", "_cancel_taken", "_canceled", "_level", "_state", "file_object", "irp", "queue")

    def __init__(self, queue: IoQueue, irp: Irp, file_object: FileObject | None = None) -> None:
        self.irp = irp
        self.queue = queue
        self.file_object = file_object
        self._level = irp._index
        self._state = _QUEUED
        self._canceled = False
        self._cancel_callback: Callable[[Request], object] | None = None
        self._cancel_taken = False

    @property
    def major(self) -> int:
        """The major function of the IRP's stack location at this device."""
        return self.irp._stack[self._level].major

    @property
    def is_canceled(self) -> bool:
        """``WdfRequestIsCanceled``: the IRP was cancelled, or the queue purged this request."""
        return self.irp.cancel or self._canceled

    @property
    def owned(self) -> bool:
        """True while the driver owns the request (presented or retrieved, not yet finished)."""
        return self._state == _DELIVERED

    def __repr__(self) -> str:
        state = ("queued", "owned by the driver", "finished")[self._state]
        return f"<Request {self.irp!r} {state} in {self.queue!r}>"

    def complete(self, status: int | None = None, information: int | None = None) -> None:
        """``WdfRequestCompleteWithInformation``: complete the request's IRP and free its slot.

        A sequential queue presents its next request after this; a state operation waiting for
        delivered requests may finish.

        :raises IrpStateError: if the driver does not own the request (still queued, or finished).
        :raises BugCheck: as :func:`~airp.complete_request`; notably 0xC9 / 0x07 if the request is
            still cancelable (call :meth:`unmark_cancelable` first).
        """
        if self._state != _DELIVERED:
            raise IrpStateError(f"cannot complete {self!r}: the driver does not own it")
        complete_request(self.irp, status, information)
        self.queue._release(self)

    def forward_to_queue(self, destination: IoQueue) -> NtStatus:
        """``WdfRequestForwardToIoQueue``: hand an owned request to another queue of the device.

        After success the destination owns it: it may present it (once its workers run), and
        cancels it silently if its IRP is cancelled while it waits there.  The source queue's slot
        is free at once (a sequential source presents its next request).

        :returns: STATUS_SUCCESS; STATUS_INVALID_DEVICE_REQUEST if the driver does not own the
            request, *destination* is its own queue or belongs to another device, or the request is
            cancelable (unmark it first); STATUS_WDF_BUSY if *destination* is not accepting.
        :raises TypeError: if *destination* is not an :class:`IoQueue`.
        """
        if not isinstance(destination, IoQueue):
            raise must_be("forward_to_queue(destination): destination", "an IoQueue", destination)
        source = self.queue
        if self._state != _DELIVERED or self not in source._outstanding:
            return STATUS_INVALID_DEVICE_REQUEST
        if destination is source or destination.device is not source.device:
            return STATUS_INVALID_DEVICE_REQUEST
        if self._cancel_callback is not None:
            return STATUS_INVALID_DEVICE_REQUEST
        if not destination._accepting or destination.tasks._state is not DeviceState.RUNNING:
            return STATUS_WDF_BUSY
        del source._outstanding[self]
        self.queue = destination
        self._state = _QUEUED
        destination._enqueue(self.irp)
        source._freed()
        return STATUS_SUCCESS

    def mark_cancelable(self, callback: Callable[[Request], object]) -> NtStatus:
        """``WdfRequestMarkCancelableEx``: have *callback* called if the request is cancelled.

        Answers as :func:`airp.mark_irp_cancelable` does for a bare IRP (STATUS_SUCCESS or
        STATUS_CANCELLED), plus KMDF's STATUS_INVALID_DEVICE_REQUEST for misuse.

        *callback* is a plain function ``(request) -> None`` (``EvtRequestCancel``) that must
        complete the request, normally with STATUS_CANCELLED.  It is called when the IRP is
        cancelled, when the queue is purged, or when the device is removed.

        :returns: STATUS_SUCCESS: *callback* will be called on cancel.  STATUS_CANCELLED: the
            request is already cancelled; *callback* will not be called and the driver must complete
            it itself.  STATUS_INVALID_DEVICE_REQUEST: the driver does not own the request, or it is
            already cancelable.
        :raises TypeError: if *callback* is a coroutine function or not callable.
        """
        if not callable(callback) or inspect.iscoroutinefunction(callback):
            raise TypeError(f"a request cancel callback is a plain function (request) -> None, got {callback!r}")
        if self._state != _DELIVERED or self._cancel_callback is not None:
            return STATUS_INVALID_DEVICE_REQUEST
        if self.is_canceled:
            return STATUS_CANCELLED
        irp = self.irp
        self._cancel_callback = callback
        self._cancel_taken = False
        # Arm, then re-check (reference 6.3).
        irp.cancel_routine = self._cancel_owned
        if irp.cancel:
            taken = irp.cancel_routine
            irp.cancel_routine = None
            if taken is not None:
                self._cancel_callback = None
                return STATUS_CANCELLED
        return STATUS_SUCCESS

    def unmark_cancelable(self) -> NtStatus:
        """``WdfRequestUnmarkCancelable``: the request may no longer be cancelled through the callback.

        :returns: STATUS_CANCELLED if the cancel callback has run or is about to: the driver must
            then not complete the request (the callback does).  STATUS_SUCCESS otherwise: the
            callback will never run.  STATUS_INVALID_DEVICE_REQUEST if the request was not
            cancelable.
        """
        if self._cancel_callback is None:
            return STATUS_INVALID_DEVICE_REQUEST
        if self._cancel_taken:
            return STATUS_CANCELLED
        irp = self.irp
        routine = irp.cancel_routine
        irp.cancel_routine = None
        self._cancel_callback = None
        if routine is None:
            return STATUS_CANCELLED
        return STATUS_SUCCESS

    # -- cancel routines -----------------------------------------------------------------------

    def _cancel_owned(self, device: DeviceObject | None, irp: Irp) -> None:
        # The IRP's cancel routine while the driver owns a cancelable request.
        self._run_cancel_callback()

    def _run_cancel_callback(self) -> None:
        callback = self._cancel_callback
        self._cancel_taken = True
        self._canceled = True
        if callback is not None:
            try:
                callback(self)
            except BaseException as error:
                self._callback_raised(error)
                raise

    def _callback_raised(self, error: BaseException) -> None:
        # EvtRequestCancel or EvtIoCanceledOnQueue raised.  The request was being handed to it to
        # be completed, so nothing else will finish it: unless the callback completed it before
        # raising, complete it with STATUS_INTERNAL_ERROR and free its slot (a sequential queue
        # goes on, a purge's waiters are told); the caller then lets the exception reach whoever
        # cancelled (cancel_irp's caller, the purge's caller).
        irp = self.irp
        if self._state != _DELIVERED or irp._index != self._level:
            return
        irp.cancel_routine = None
        if irp.routine_error is None:
            irp.routine_error = error
        # What that completion raises (a driver-allocated IRP's final stage) is chained to
        # *error*, never raised in its place: the first bug check is the one the caller sees.
        complete_after_error(irp, error, STATUS_INTERNAL_ERROR)
        self.queue._release(self)


class _Waiter:
    __slots__ = ("callback", "drain")

    def __init__(self, drain: bool, callback: Callable[[IoQueue], object] | None) -> None:
        self.drain = drain
        self.callback = callback


def _check_queue_callback(callback: object) -> None:
    # Called when the queue's delivered requests are done, inside the completion that finished
    # the last one: found out there, a bad callback would fail far from the call that gave it.
    check_plain_function("callback", callback, signature="(queue) -> None", why="it is called inside a completion and cannot await")


class IoQueue(_QueueBase):
    """A KMDF-style I/O queue (``WDFQUEUE``) of one device.

    A dispatch routine puts IRPs in with :meth:`insert`; the queue presents them to *handler* in its
    worker tasks, which run in the device's task group (:func:`~airp.run_device`).

    :param device: the device the queue belongs to.
    :param handler: ``async def handler(queue, request)``; required unless *dispatch* is manual.
    :param dispatch: :class:`DispatchType` (or its value as a string): sequential by default.
    :param limit: parallel queues only: at most this many requests outstanding at once
        (``NumberOfPresentedRequests``); ``None`` for no limit.
    :param name: a name for reprs and failure reports.
    :param on_canceled_on_queue: ``EvtIoCanceledOnQueue``, a plain function ``(queue, request)``:
        called instead of completing with STATUS_CANCELLED when a request's IRP is cancelled while it
        waits here or when the queue is purged; it then owns the request and must complete it.
    :param ready_notify: ``EvtIoQueueState`` (``WdfIoQueueReadyNotify``), a plain function
        ``(queue)``: called when a request arrives in an empty, started queue.
    :param started: start in the started state (default); ``False`` starts it stopped.
    :raises TypeError: if *device* is not a DeviceObject, *name* not a str or ``None``,
        *handler* is missing or not a coroutine function, or a callback is a coroutine function.
    :raises ValueError: for a bad *limit* or *dispatch*.
    :raises RuntimeError: if the device is being removed.
    """

    __slots__ = (
        "_accepting",
        "_cancel_waiting",
        "_closing",
        "_dispatching",
        "_idle",
        "_limit",
        "_max_workers",
        "_outstanding",
        "_presenting",
        "_state",
        "_waiters",
        "_waiting",
        "_workers",
        "delivered",
        "device",
        "dispatch",
        "handler",
        "name",
        "on_canceled_on_queue",
        "ready_notify",
        "tasks",
    )

    def __init__(
        self,
        device: DeviceObject,
        handler: IoHandler | None = None,
        *,
        dispatch: DispatchType | str = DispatchType.SEQUENTIAL,
        limit: int | None = None,
        name: str | None = None,
        on_canceled_on_queue: Callable[[IoQueue, Request], object] | None = None,
        ready_notify: Callable[[IoQueue], object] | None = None,
        started: bool = True,
    ) -> None:
        if not isinstance(device, DeviceObject):
            raise must_be("IoQueue(device): device", "a DeviceObject", device)
        dispatch = DispatchType(dispatch)
        if name is not None and not isinstance(name, str):
            raise must_be("IoQueue(name=...): name", "a str or None", name)
        if limit is not None and (type(limit) is not int or limit < 1):
            raise ValueError(f"limit must be an int >= 1 or None, got {type(limit).__name__} {limit!r}")
        if dispatch is DispatchType.MANUAL:
            if handler is not None:
                raise TypeError("a manual queue presents nothing: it takes no handler (use retrieve_next_request)")
        elif handler is None or not inspect.iscoroutinefunction(handler):
            raise TypeError(f"an I/O queue handler is an async def (queue, request) coroutine function, got {handler!r}")
        if limit is not None and dispatch is not DispatchType.PARALLEL:
            raise ValueError(f"only a parallel queue takes a limit, not a {dispatch.value} one (got limit={limit!r})")
        for label, callback in (("on_canceled_on_queue", on_canceled_on_queue), ("ready_notify", ready_notify)):
            if callback is not None and (not callable(callback) or inspect.iscoroutinefunction(callback)):
                raise TypeError(f"{label} is a plain function (it runs inside cancel and dispatch paths), got {callback!r}")
        self.device = device
        self.tasks = device_tasks(device)
        self.handler = handler
        self.dispatch = dispatch
        self.name = name
        self.on_canceled_on_queue = on_canceled_on_queue
        self.ready_notify = ready_notify
        #: How many requests the queue has presented or handed out.
        self.delivered = 0
        if dispatch is DispatchType.SEQUENTIAL:
            self._limit: float = 1
            self._max_workers: float = 1
        elif dispatch is DispatchType.PARALLEL:
            self._limit = math.inf if limit is None else limit
            self._max_workers = self._limit
        else:
            self._limit = math.inf
            self._max_workers = 0
        # Waiting IRPs.  A Request is made only when one is needed (presented, retrieved, forwarded,
        # handed to on_canceled_on_queue): queueing allocates nothing, so a long backlog costs the
        # garbage collector nothing either.
        self._waiting: deque[Irp] = deque()
        self._cancel_waiting: CancelRoutine = self._cancel_waiting_irp
        self._outstanding: dict[Request, None] = {}
        self._idle: deque[anyio.Event] = deque()
        self._workers = 0
        self._presenting = 0
        self._waiters: list[_Waiter] = []
        self._closing = False
        self._accepting = True
        self._dispatching = started
        self._state = QueueState.STARTED if started else QueueState.STOPPED
        self.tasks._register(self)

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        return (
            f"<IoQueue{label} {self.dispatch.value} of {self.device!r}: {self._state.value},"
            f" {len(self._waiting)} waiting, {len(self._outstanding)} outstanding>"
        )

    # -- state -------------------------------------------------------------------------------------

    @property
    def state(self) -> QueueState:
        """The last state operation applied (:class:`QueueState`)."""
        return self._state

    @property
    def accepting(self) -> bool:
        """True if new requests are accepted (started, stopped, or stopped and purged)."""
        return self._accepting and self.tasks._state is DeviceState.RUNNING

    @property
    def waiting(self) -> int:
        """How many requests wait in the queue."""
        return len(self._waiting)

    @property
    def outstanding(self) -> int:
        """How many requests the driver owns (presented or retrieved, not finished)."""
        return len(self._outstanding)

    # -- arrivals ----------------------------------------------------------------------------------

    def add(self, irp: Irp) -> NtStatus:
        """Deprecated name of :meth:`insert`.

        :returns: as :meth:`insert`.
        """
        warnings.warn(
            "IoQueue.add(irp) is deprecated; use IoQueue.insert(irp), the family's verb for queuing an IRP and"
            " returning STATUS_PENDING (see docs/queues.md, 'One vocabulary')",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.insert(irp)

    def insert(self, irp: Irp) -> NtStatus:
        """Queue *irp* (what KMDF's dispatcher does for a request type routed to this queue).

        The family's verb for "queue this IRP and return STATUS_PENDING", as
        :meth:`airp.CancelSafeQueue.insert` (``IoCsqInsertIrpEx``); StartIo keeps its Windows name,
        ``start_packet``.  One difference: a refused IRP is completed here (as KMDF's dispatcher
        completes it), while a cancel-safe queue hands its storage's refusal back to the caller.

        Call it from the dispatch routine and return what it returns.  The IRP is marked pending
        and queued, with a cancel routine armed (cancelled while waiting: STATUS_CANCELLED, or
        ``on_canceled_on_queue``).  A queue that is not accepting (drained, purged) completes it at
        once with STATUS_INVALID_DEVICE_STATE; a device being removed, with its removal status.

        :returns: STATUS_PENDING if the IRP was queued (or was already marked pending); otherwise
            the status it was completed with.
        :raises RuntimeError: if the device is not running (see :func:`~airp.run_device`); *irp* is
            then completed with STATUS_DEVICE_NOT_READY, so that it is not lost.
        :raises IrpStateError: if *irp* has no current stack location, or is already in one of
            this device's queues (or owned by its driver through one).
        :raises TypeError: if *irp* is not an IRP.
        """
        if type(irp) is not Irp and not isinstance(irp, Irp):
            raise must_be("insert(irp): irp", "an Irp", irp)
        tasks = self.tasks
        requests = tasks._requests
        if irp in requests:
            raise IrpStateError(f"{irp!r} is already in {requests[irp]!r}: a request is queued once")
        refused = None if tasks._state is DeviceState.RUNNING else tasks._refusal(irp)
        loc = irp.current_stack_location
        if refused is None and not self._accepting:
            refused = STATUS_INVALID_DEVICE_STATE
        if refused is not None:
            marked = loc.control & _PENDING_RETURNED
            complete_request(irp, refused, 0)
            return STATUS_PENDING if marked else refused
        loc.control |= _PENDING_RETURNED  # IoMarkIrpPending
        requests[irp] = self
        self._enqueue(irp)
        return STATUS_PENDING

    def _enqueue(self, irp: Irp) -> None:
        waiting = self._waiting
        waiting.append(irp)
        monitor = irp._monitor
        if monitor is not None:
            monitor.queued(irp, self.device, self.name)
        # Arm, then re-check (reference 6.3): a cancel that came earlier is seen here.  Writing
        # irp.cancel_routine is the exchange set_cancel_routine makes, minus its check that the
        # routine is not a coroutine function (ours is a bound method, checked once).
        irp.cancel_routine = self._cancel_waiting
        if irp.cancel:
            taken = irp.cancel_routine
            irp.cancel_routine = None
            if taken is not None:
                waiting.pop()
                self._canceled_on_queue(irp)
                return
        if len(waiting) == 1 and self._dispatching and self.ready_notify is not None:
            self.ready_notify(self)
        self._kick()

    def _request_for(self, irp: Irp) -> Request:
        """The Request of a waiting *irp*, made on first need."""
        requests = self.tasks._requests
        entry = requests.get(irp)
        if type(entry) is Request:
            entry.queue = self
            return entry
        request = Request(self, irp, irp._stack[irp._index].file_object)
        requests[irp] = request
        return request

    def _cancel_waiting_irp(self, device: DeviceObject | None, irp: Irp) -> None:
        # The IRP's cancel routine while it waits in this queue.
        try:
            self._waiting.remove(irp)
        except ValueError:  # pragma: no cover - the routine is disarmed whenever it leaves
            return
        self._canceled_on_queue(irp)
        if self._waiters:
            self._check_waiters()

    def _canceled_on_queue(self, irp: Irp) -> None:
        callback = self.on_canceled_on_queue
        if callback is not None:
            # The driver owns it now (outside any slot) and must complete it.
            request = self._request_for(irp)
            request._state = _DELIVERED
            request._canceled = True
            try:
                callback(self, request)
            except BaseException as error:
                request._callback_raised(error)
                raise
            return
        self._forget(irp)
        complete_request(irp, STATUS_CANCELLED, 0)

    def _forget(self, irp: Irp) -> None:
        entry = self.tasks._requests.pop(irp, None)
        if type(entry) is Request:
            entry._state = _GONE

    # -- delivery ----------------------------------------------------------------------------------

    def _kick(self) -> None:
        """Make sure enough workers will look at the queue for what it can present now.

        Every request that may be presented (waiting, within the limit) needs a worker that is not
        busy presenting another: parked workers are woken, and missing ones are created, up to what
        the dispatch type allows.  Waking one too many is harmless (it finds nothing and parks).
        """
        idle = self._idle
        if not idle and self._workers >= self._max_workers:
            return  # nobody to wake and no room for another worker: the busy ones will loop
        if not self._dispatching:
            return
        needed = min(len(self._waiting), self._limit - len(self._outstanding))
        if needed <= 0:
            return
        for _ in range(min(len(idle), int(needed))):
            idle.popleft().set()
        workers = self._workers
        missing = min(needed - (workers - self._presenting), self._max_workers - workers)
        if missing > 0 and self.tasks._state is DeviceState.RUNNING:
            label = f" {self.name}" if self.name else ""
            while missing > 0:
                self._workers += 1
                self.tasks._spawn(self._work, f"airp IoQueue{label} worker for {self.device!r}")
                missing -= 1

    def _take(self) -> Request | None:
        if not self._dispatching:
            return None
        waiting = self._waiting
        if not waiting or len(self._outstanding) >= self._limit:
            return None
        irp = waiting.popleft()
        irp.cancel_routine = None
        request = self._request_for(irp)
        request._state = _DELIVERED
        self._outstanding[request] = None
        self.delivered += 1
        monitor = irp._monitor
        if monitor is not None:
            monitor.dequeued(irp, self.device, self.name)
        return request

    async def _work(self) -> None:
        idle = self._idle
        checkpoint = anyio.lowlevel.checkpoint
        try:
            while True:
                request = self._take()
                if request is not None:
                    self._presenting += 1
                    try:
                        await self._present(request)
                    finally:
                        self._presenting -= 1
                    # One checkpoint per request, like a memory-object stream's receive.
                    await checkpoint()
                    continue
                if self._closing:
                    return
                event = anyio.Event()
                idle.append(event)
                try:
                    await event.wait()
                except BaseException:
                    if event in idle:
                        idle.remove(event)
                    raise
        finally:
            self._workers -= 1

    async def _present(self, request: Request) -> None:
        irp = request.irp
        level = request._level
        assert self.handler is not None
        token = current_request.set(irp) if irp._monitor is not None else None
        try:
            await self.handler(self, request)
        except BaseException as error:
            if token is not None:
                current_request.reset(token)
            held = request._state == _DELIVERED and request.queue is self and irp._index == level
            if isinstance(error, anyio.get_cancelled_exc_class()):
                if held:
                    irp.cancel_routine = None
                    complete_after_error(irp, error, self.tasks.removal_status)
                    self._release(request)
                raise
            status = None
            if held:
                irp.cancel_routine = None
                status = STATUS_INTERNAL_ERROR
                complete_after_error(irp, error, status)
                self._release(request)
            self.tasks._report(RoutineFailure(self.device, self.name or f"IoQueue {self.dispatch.value}", irp, error, status))
            if isinstance(error, BugCheck) or not isinstance(error, Exception):
                raise
            return
        if token is not None:
            current_request.reset(token)
        if request._state == _DELIVERED and request.queue is self and irp._index != level:
            # Completed with complete_request, or passed on to a lower driver: no longer ours.
            self._release(request)

    # -- the driver's side of delivery ------------------------------------------------------------

    def _release(self, request: Request) -> None:
        request._state = _GONE
        tasks = self.tasks
        tasks._requests.pop(request.irp, None)
        if tasks._settling is not None:
            tasks._let_go()  # the device's exit is waiting for the requests the driver holds
        outstanding = self._outstanding
        if request in outstanding:
            del outstanding[request]
            self._freed()

    def _freed(self) -> None:
        self._kick()
        if self._waiters:
            self._check_waiters()

    def retrieve_next_request(self) -> Request | None:
        """``WdfIoQueueRetrieveNextRequest``: take the next waiting request; the driver owns it.

        Meant for manual queues; on a sequential or parallel queue it takes a request beyond the
        queue's limit, as KMDF allows.

        :returns: the request, or ``None`` if none is waiting or the queue is stopped.
        """
        if not self._dispatching or not self._waiting:
            return None
        return self._hand_to_driver(self._waiting.popleft())

    def _hand_to_driver(self, irp: Irp) -> Request:
        # A manual retrieval: the IRP leaves the waiting list and belongs to the driver.
        irp.cancel_routine = None
        request = self._request_for(irp)
        request._state = _DELIVERED
        self._outstanding[request] = None
        self.delivered += 1
        monitor = irp._monitor
        if monitor is not None:
            monitor.dequeued(irp, self.device, self.name)
        if self._waiters:
            self._check_waiters()
        return request

    def retrieve_request_by_file_object(self, file_object: FileObject) -> Request | None:
        """``WdfIoQueueRetrieveRequestByFileObject``: the first waiting request for *file_object*.

        :returns: the request (now owned by the driver), or ``None`` if there is none or the queue
            is stopped.
        :raises TypeError: if *file_object* is not a FileObject.
        """
        if not isinstance(file_object, FileObject):
            raise must_be("retrieve_request_by_file_object(file_object): file_object", "a FileObject", file_object)
        if not self._dispatching:
            return None
        for irp in self._waiting:
            if irp._stack[irp._index].file_object is file_object:
                self._waiting.remove(irp)
                return self._hand_to_driver(irp)
        return None

    # -- state operations (reference 9.2) ---------------------------------------------------------

    def start(self) -> None:
        """``WdfIoQueueStart``: accept new requests and present queued ones."""
        self._accepting = True
        self._dispatching = True
        self._state = QueueState.STARTED
        self._kick()

    def stop(self, callback: Callable[[IoQueue], object] | None = None) -> None:
        """``WdfIoQueueStop``: keep accepting, but hold requests instead of presenting them.

        :param callback: plain function ``(queue)`` called once every delivered request has been
            completed, forwarded or cancelled (at once if none is outstanding).
        :raises TypeError: if *callback* is not a plain function or None (checked first).
        """
        _check_queue_callback(callback)
        self._accepting = True
        self._dispatching = False
        self._state = QueueState.STOPPED
        self._add_waiter(False, callback)

    def drain(self, callback: Callable[[IoQueue], object] | None = None) -> None:
        """``WdfIoQueueDrain``: refuse new requests (STATUS_INVALID_DEVICE_STATE), present the queued ones.

        :param callback: called once the queue is empty and no delivered request is outstanding.
        :raises TypeError: if *callback* is not a plain function or None (checked first).
        """
        _check_queue_callback(callback)
        self._accepting = False
        self._dispatching = True
        self._state = QueueState.DRAINED
        self._add_waiter(True, callback)
        self._kick()

    def purge(self, callback: Callable[[IoQueue], object] | None = None) -> None:
        """``WdfIoQueuePurge``: refuse new requests and cancel queued ones.

        New requests complete with STATUS_INVALID_DEVICE_STATE; queued ones with STATUS_CANCELLED
        (or go to ``on_canceled_on_queue``); delivered requests marked cancelable have their cancel
        callback called.

        :param callback: called once no delivered request is outstanding.
        :raises Exception: the first exception a driver callback raised; every request has still
            been dealt with (that one completed with STATUS_INTERNAL_ERROR unless the callback had
            completed it) and *callback* registered.
        :raises TypeError: if *callback* is not a plain function or None (checked first).
        """
        _check_queue_callback(callback)
        self._accepting = False
        self._dispatching = False
        self._state = QueueState.PURGED
        self._purge(callback)

    def stop_and_purge(self, callback: Callable[[IoQueue], object] | None = None) -> None:
        """``WdfIoQueueStopAndPurge``: as :meth:`purge`, but new requests are accepted and held.

        :param callback: called once no delivered request is outstanding.
        :raises Exception: as :meth:`purge`.
        :raises TypeError: if *callback* is not a plain function or None (checked first).
        """
        _check_queue_callback(callback)
        self._accepting = True
        self._dispatching = False
        self._state = QueueState.STOPPED_PURGED
        self._purge(callback)

    async def stop_synchronously(self) -> None:
        """``WdfIoQueueStopSynchronously``: :meth:`stop`, then wait for the delivered requests.

        On cancellation: the queue stays stopped; only the wait is abandoned.
        """
        await self._wait(self.stop)

    async def drain_synchronously(self) -> None:
        """``WdfIoQueueDrainSynchronously``: :meth:`drain`, then wait until it is drained.

        On cancellation: the queue stays drained; only the wait is abandoned.
        """
        await self._wait(self.drain)

    async def purge_synchronously(self) -> None:
        """``WdfIoQueuePurgeSynchronously``: :meth:`purge`, then wait for the delivered requests.

        On cancellation: the queue stays purged; only the wait is abandoned.
        """
        await self._wait(self.purge)

    async def stop_and_purge_synchronously(self) -> None:
        """``WdfIoQueueStopAndPurgeSynchronously``: :meth:`stop_and_purge`, then wait.

        On cancellation: the queue stays stopped and purged; only the wait is abandoned.
        """
        await self._wait(self.stop_and_purge)

    async def _wait(self, operation: Callable[[Callable[[IoQueue], object]], None]) -> None:
        event = anyio.Event()
        operation(lambda queue: event.set())
        await event.wait()

    def _purge(self, callback: Callable[[IoQueue], object] | None) -> None:
        """Cancel what is queued and the cancelable delivered requests, then add *callback*.

        Every request is dealt with, and *callback* registered, even if a driver callback
        (``on_canceled_on_queue``, a request's cancel callback) raises: its request has been
        completed with STATUS_INTERNAL_ERROR, and the first exception is raised at the end, to the
        caller of the purge.
        """
        keep = _KeepFirst()
        waiting = self._waiting
        while waiting:
            irp = waiting.popleft()
            irp.cancel_routine = None
            with keep:
                self._canceled_on_queue(irp)
        for request in tuple(self._outstanding):
            irp = request.irp
            if request._cancel_callback is not None and irp.cancel_routine is not None:
                irp.cancel_routine = None
                with keep:
                    request._run_cancel_callback()
        with keep:
            self._add_waiter(False, callback)
        keep.raise_first()

    def _add_waiter(self, drain: bool, callback: Callable[[IoQueue], object] | None) -> None:
        if callback is not None:
            self._waiters.append(_Waiter(drain, callback))
            self._check_waiters()

    def _check_waiters(self) -> None:
        if self._outstanding:
            return
        empty = not self._waiting
        done = [w for w in self._waiters if empty or not w.drain]
        if not done:
            return
        self._waiters = [w for w in self._waiters if w not in done]
        for waiter in done:
            if waiter.callback is not None:
                waiter.callback(self)

    # -- the device's life -------------------------------------------------------------------------

    def _device_started(self) -> None:
        self._kick()

    def _device_removing(self, status: NtStatus) -> None:
        self._closing = True
        self._accepting = False
        self._dispatching = False
        idle = self._idle
        while idle:
            idle.popleft().set()
        keep = _KeepFirst()
        waiting = self._waiting
        while waiting:
            irp = waiting.popleft()
            irp.cancel_routine = None
            self._forget(irp)
            with keep:
                complete_request(irp, status, 0)
        for hold in self._holds():
            if not hold.irp.completed:
                with keep:
                    self.tasks._cancel_held(hold.queue, hold.irp)
        with keep:
            self._check_waiters()
        keep.raise_first()

    def _stuck(self) -> list[tuple[Irp, str]]:
        found = [(irp, f"{self!r}, waiting") for irp in self._waiting]
        found.extend((hold.irp, f"{self!r}, owned by the driver (presented or retrieved)") for hold in self._holds())
        return found

    def _holds(self) -> list[_Hold]:
        """The requests the driver owns through this queue: presented, retrieved, or handed to
        ``on_canceled_on_queue``, and still at the driver's location (or passed below it)."""
        label = self.name or f"IoQueue {self.dispatch.value}"
        return [
            _Hold(label, entry.irp, entry._level, entry)
            for entry in self.tasks._requests.values()
            if type(entry) is Request and entry.queue is self and entry._state == _DELIVERED and entry.irp._index <= entry._level
        ]

