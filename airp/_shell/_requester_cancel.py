"""The requester's side of cancellation: the bounded wait after cancel, disowning, the task as thread.

Windows never lets a cancel shorten the wait for an IRP to come back (reference 6.6): after
``IoCancelIrp`` the requester keeps waiting until a driver completes the IRP.  Only a thread that
is exiting gives up, after five minutes: it disowns the IRP (``Tail.Overlay.Thread = NULL``) and
logs ``IO_DRIVER_CANCEL_TIMEOUT`` against the device that holds it.

airp does the same with anyio cancel scopes:

* A requester waiting for an IRP inside a cancelled scope cancels the IRP and waits for it,
  shielded, for at most the *cancel-wait limit* (:func:`set_cancel_wait_limit`; Windows' five
  minutes by default, which the virtual clock of :mod:`airp.testing` passes in no real time).
  Past the limit the IRP is disowned (``irp.owner = None``), a :class:`DriverCancelTimeoutWarning`
  names the device that holds it, and the requester is released: its cancellation propagates.
* :func:`task_io` is the thread's IRP list: requests issued inside it are charged to it, and when it
  exits (normally, with an error, or because the task was cancelled) every request still
  outstanding is cancelled and waited for in the same bounded way (``IoCancelThreadIo``).

Per-run settings live in an :class:`anyio.lowlevel.RunVar`, never in module globals.
"""

from __future__ import annotations

import contextvars
import math
import os
import sys
import warnings
import weakref
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel

from .._machine._cancel import CANCEL_RAN, cancel_irp
from .._machine._errors import NtStatusError
from .._machine._file import FileObject
from .._machine._irp import Irp
from .._machine._status import STATUS_DRIVER_CANCEL_TIMEOUT, NtStatus
from ._call import call_driver
from ._waiter import new_waiter

if TYPE_CHECKING:
    from .._machine._device import DeviceObject

__all__ = [
    "DEFAULT_CANCEL_WAIT_LIMIT",
    "call_driver_for_requester",
    "current_effective_deadline",
    "requester_gave_up",
    "DriverCancelTimeoutError",
    "DriverCancelTimeoutWarning",
    "TaskIo",
    "current_task_io",
    "get_cancel_wait_limit",
    "is_disowned",
    "set_cancel_wait_limit",
    "task_io",
]

#: Windows' limit: a cancelled IRP not completed within five minutes is disowned (reference 6.6).
DEFAULT_CANCEL_WAIT_LIMIT = 300.0


class DriverCancelTimeoutWarning(RuntimeWarning):
    """A cancelled IRP was not completed within the cancel-wait limit and has been disowned.

    The analogue of the ``IO_DRIVER_CANCEL_TIMEOUT`` event Windows logs (reference 6.6).  The driver
    of :attr:`device` holds the IRP and did not complete it after the cancel.  The message says
    what happened, as far as airp saw it: no cancel routine was armed when the IRP was cancelled
    (the driver neither set one nor noticed ``irp.cancel``), and where the IRP was then if a queue
    of the device holds it (a StartIo queue, a KMDF queue); or the cancel routine that ran and did
    not complete it.  When the driver completes the IRP later nobody is waiting.

    :ivar irp: the disowned IRP.
    :ivar device: the device of the IRP's current stack location (the one holding it), or ``None``.
    :ivar limit: the cancel-wait limit in seconds that expired.
    :ivar what_happened: the sentence of the message that says what happened to the cancel.
    """

    def __init__(self, irp: Irp, device: DeviceObject | None, limit: float) -> None:
        self.irp = irp
        self.device = device
        self.limit = limit
        driver = device.driver if device is not None else None
        holder = f"{device!r} (driver {driver!r})" if device is not None else "its creator"
        what, advice = _what_happened_to_the_cancel(irp, device)
        self.what_happened = what
        super().__init__(
            f"{irp!r} was cancelled but not completed within {limit:g} s: it is held by {holder}; {what}."
            f" The IRP has been disowned (IO_DRIVER_CANCEL_TIMEOUT); {advice}."
        )


def _what_happened_to_the_cancel(irp: Irp, device: DeviceObject | None) -> tuple[str, str]:
    """What the cancel of *irp* found and did, and what the driver should do: two sentences.

    Read from what :func:`~airp.cancel_irp` noted (the cancel routine it ran, or none armed) and,
    when no routine ran, from the queues of *device*'s task group (an IRP waiting in a StartIo or
    KMDF queue, or in its StartIo routine, is named with where it is).
    """
    ran = irp.__dict__.get(CANCEL_RAN, _NOT_CANCELLED)
    if ran is not None and ran is not _NOT_CANCELLED:
        name = getattr(ran, "__qualname__", None) or repr(ran)
        return (
            f"its cancel routine {name} ran and did not complete the IRP",
            "a cancel routine must take the IRP out of wherever its driver keeps it and complete it with"
            " STATUS_CANCELLED (reference 6.2)",
        )
    where = _queued_where(irp, device)
    if ran is _NOT_CANCELLED:
        what = "it was never cancelled through cancel_irp"
    else:
        what = "no cancel routine was armed when it was cancelled"
    if where is not None:
        return (
            f"{what}, while it was in {where}",
            "arm a cancel routine while the IRP waits (start_packet's cancel_routine, a cancelable queue),"
            " or have the routine that holds it check irp.cancel",
        )
    return (
        f"{what}, and its driver did not notice irp.cancel: it ignores cancellation",
        "give the driver a cancel routine or a cancel-safe queue, or complete held IRPs in IRP_MJ_CLEANUP",
    )


#: What cancel_irp notes in an IRP it never saw (the default of the look-up).
_NOT_CANCELLED = object()


def _queued_where(irp: Irp, device: DeviceObject | None) -> str | None:
    """Where a queue of *device*'s task group holds *irp* ("<StartIoQueue ...>, waiting"), if one does."""
    tasks = getattr(device, "tasks", None) if device is not None else None
    for queue in getattr(tasks, "_queues", ()):
        try:
            for queued, where in queue._stuck():
                if queued is irp:
                    return str(where)
        except Exception:  # a report must never fail: say nothing about the queue instead
            return None
    return None


class DriverCancelTimeoutError(NtStatusError):
    """Raised where a caller owns an IRP and needs it back, but the IRP was disowned after a cancel.

    Status STATUS_DRIVER_CANCEL_TIMEOUT.  The IRP is still held by :attr:`device`'s driver: the caller
    must not reuse, free or complete it.

    :ivar irp: the disowned IRP.
    :ivar device: the device holding it, or ``None``.
    """

    def __init__(self, irp: Irp, device: DeviceObject | None, limit: float) -> None:
        self.irp = irp
        self.device = device
        what, _ = _what_happened_to_the_cancel(irp, device)
        super().__init__(
            STATUS_DRIVER_CANCEL_TIMEOUT,
            f"{irp!r} was not handed back within {limit:g} s of being cancelled (held by {device!r}; {what})",
        )


#: The limit a run starts with when nothing in it called set_cancel_wait_limit: 300 s, or what the
#: configuration gave (the pytest plugin's ``airp_cancel_wait_limit`` ini option sets it through
#: _set_configured_cancel_wait_limit).  Configuration, not run state: it is read when a run's
#: state is first made.
_configured_cancel_wait_limit: float = DEFAULT_CANCEL_WAIT_LIMIT

#: Where an IRP carries the cancel-wait limit of the I/O manager it was sent through
#: (``IoManager(cancel_wait_limit=...)``), in its ``__dict__``; cleared by IoReuseIrp.
_IRP_LIMIT = "_airp_cancel_wait_limit"


def _set_configured_cancel_wait_limit(seconds: float | None) -> float:
    """Set the limit every run starts with (the pytest plugin's ini option); returns the previous one."""
    global _configured_cancel_wait_limit
    previous = _configured_cancel_wait_limit
    _configured_cancel_wait_limit = _check_limit(seconds, "the configured cancel-wait limit")
    return previous


def _limit_for(irp: Irp) -> float:
    """The cancel-wait limit for *irp*: its I/O manager's if it was given one, else the run's."""
    limit: float | None = irp.__dict__.get(_IRP_LIMIT)
    return _state().cancel_wait_limit if limit is None else limit


class _RunState:
    __slots__ = ("cancel_wait_limit", "disowned")

    def __init__(self) -> None:
        self.cancel_wait_limit = _configured_cancel_wait_limit
        self.disowned: weakref.WeakSet[Irp] = weakref.WeakSet()


_run_state: anyio.lowlevel.RunVar[_RunState] = anyio.lowlevel.RunVar("airp_requester_state")


def _state() -> _RunState:
    try:
        return _run_state.get()
    except LookupError:
        state = _RunState()
        _run_state.set(state)
        return state


def _check_limit(seconds: float | None, what: str) -> float:
    if seconds is None:
        return math.inf
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"{what} must be a number of seconds or None, got {type(seconds).__name__} {seconds!r}")
    seconds = float(seconds)
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"{what} must be a number of seconds >= 0 (or None for no limit), got {seconds!r}")
    return seconds


def set_cancel_wait_limit(seconds: float | None) -> float:
    """Set, for the current run, how long a requester waits for a cancelled IRP to come back.

    Applies to every wait that cancels an IRP: :func:`~airp.wait_for_irp` (``await irp``, the
    :class:`~airp.FileHandle` calls), :func:`~airp.call_driver_and_wait`,
    :func:`~airp.call_driver_with_timeout`, :func:`task_io` exits and handle cleanup.  Call it inside
    the run (it is stored in a :class:`~anyio.lowlevel.RunVar`); each run starts with the
    configured limit: the pytest plugin's ini option ``airp_cancel_wait_limit`` if set, else
    :data:`DEFAULT_CANCEL_WAIT_LIMIT` (300 s, as Windows).

    Precedence, most specific first:

    1. a limit given to the call itself (``call_driver_with_timeout(..., cancel_wait_limit=)``);
    2. the ``cancel_wait_limit`` of the :class:`~airp.IoManager` the IRP was sent through, or made
       by (``io.new_traced_irp``), for that IRP's waits and its handle's close;
    3. this run's limit, set here;
    4. the ini option ``airp_cancel_wait_limit`` of airp's pytest plugin;
    5. :data:`DEFAULT_CANCEL_WAIT_LIMIT`.

    :param seconds: the limit, ``>= 0``; ``None`` waits forever (a driver that never completes a
        cancelled IRP then hangs its requester, as on Windows before the thread exits).
    :returns: the previous limit (``math.inf`` for none).
    :raises ValueError: if *seconds* is negative or NaN.
    :raises TypeError: if *seconds* is not a number.
    """
    limit = _check_limit(seconds, "the cancel-wait limit")
    state = _state()
    previous = state.cancel_wait_limit
    state.cancel_wait_limit = limit
    return previous


def get_cancel_wait_limit() -> float:
    """The current run's cancel-wait limit in seconds (``math.inf`` for none).

    It is the run's value (3 and below in :func:`set_cancel_wait_limit`'s precedence); an IRP sent
    through an :class:`~airp.IoManager` with a ``cancel_wait_limit`` of its own waits that long instead.
    """
    return _state().cancel_wait_limit


def is_disowned(irp: Irp) -> bool:
    """True if *irp* was disowned in this run after its cancel-wait limit expired.

    :raises TypeError: if *irp* is not an IRP.
    """
    if not isinstance(irp, Irp):
        raise TypeError(f"is_disowned(irp): irp must be an Irp, got {type(irp).__name__} {irp!r}")
    return irp in _state().disowned


def holding_device(irp: Irp) -> DeviceObject | None:
    """The device of the IRP's current stack location: the one that holds it, if any."""
    index = irp._index
    if index < irp.stack_count:
        return irp._stack[index].device
    return None


def _disown(irp: Irp, limit: float) -> DeviceObject | None:
    """``IopDisassociateThreadIrp``: stop waiting for *irp*; report the device holding it."""
    device = holding_device(irp)
    owner = irp.owner
    irp.owner = None
    if isinstance(owner, TaskIo):
        owner._irps.pop(irp, None)
    _state().disowned.add(irp)
    warnings.warn(DriverCancelTimeoutWarning(irp, device, limit), stacklevel=_caller_stacklevel())
    return device


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _caller_stacklevel() -> int:
    # Point the warning at the first frame outside airp (the requester's await), however deep the
    # await chain inside airp is.
    level = 1
    frame = sys._getframe(1)
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == _PACKAGE_DIR:
        level += 1
        frame = frame.f_back  # type: ignore[assignment]
    return level


async def wait_after_cancel(event: Any, irp: Irp, limit: float | None = None, reason: str = "cancelled by its waiter") -> bool:
    """Cancel *irp* unless it is already back, then wait, shielded and bounded, until it is back.

    *event* is whatever is set when the IRP comes back to this waiter (the IRP's completion event,
    or a hand-back event).  Runs under ``CancelScope(shield=True)``, so the caller's cancellation
    cannot interrupt it; it never raises the cancellation itself (the caller re-raises).

    :param limit: seconds to wait at most; ``None`` uses the IRP's I/O manager's limit if it was
        given one, else the run's :func:`get_cancel_wait_limit`.
    :param reason: why, for the IRP's monitor (``cancel_irp``'s *reason*).
    :returns: True if the IRP came back, False if the limit expired and the IRP was disowned (a
        :class:`DriverCancelTimeoutWarning` is emitted).
    :raises Exception: what the IRP's cancel routine raised, once the IRP is back.
    """
    if event.is_set():
        return True
    back = False
    error: Exception | None = None
    with anyio.CancelScope(shield=True):
        try:
            cancel_irp(irp, reason=reason)
        except Exception as raised:
            # The cancel routine raised; cancel_irp has completed the IRP.  The requester gets the
            # exception once the IRP is back, instead of its cancellation.
            error = raised
        if not event.is_set():
            if limit is None:
                limit = _limit_for(irp)
            with anyio.move_on_after(limit):
                await event.wait()
        back = event.is_set()
        if not back:
            _disown(irp, math.inf if limit is None else limit)
    if error is not None:
        raise error
    return back


# -- the requester's boundary: its cancellation becomes cancel_irp --------------------------------

#: The deadline of the requester whose dispatch chain the current task is running, if it has one.
#: Set by the I/O manager around the dispatch chain of each request with a finite deadline.
_requester_deadline: contextvars.ContextVar[float] = contextvars.ContextVar("airp_requester_deadline", default=math.inf)


def requester_gave_up() -> bool:
    """True if the cancellation being handled is the requester's: its deadline has passed.

    airp's waits inside a dispatch chain (``forward_and_wait``, ``call_driver_and_wait``, awaiting
    a driver's own IRP, ``call_driver_with_timeout``) ask this after they have cancelled the IRP
    and waited for it: if so, they return the IRP instead of raising, so that the dispatch routine
    runs to its end (reference 6.6: a thread's interruption becomes IoCancelIrp, never an abort of
    the dispatch routine).  The requester gets its cancellation back at the boundary.
    """
    deadline = _requester_deadline.get()
    return deadline != math.inf and anyio.current_time() >= deadline


async def call_driver_for_requester(device: DeviceObject, irp: Irp, deadline: float) -> NtStatus:
    """``call_driver`` on behalf of a requester whose effective deadline is *deadline*.

    The dispatch chain runs on the requester's task.  When the requester's deadline passes while a
    dispatch routine waits in one of airp's waits, that wait cancels the IRP it waits for, waits
    (shielded, bounded by the cancel-wait limit) for it to come back, and returns it: the routine
    finishes its work and completes the request.  Once the chain has returned, the requester gets
    its cancellation back (if the request has completed; a request still pending is cancelled and
    waited for where the requester awaits it).

    A dispatch routine that awaits something else (``anyio.sleep``, a lock) sees the requester's
    cancellation like a cancellation of its own; if it lets it propagate while it holds the IRP,
    :func:`~airp.call_driver` completes the IRP with STATUS_CANCELLED.  An explicit cancellation of
    the requester (``scope.cancel()``, a failing task group) is the same, except that airp's waits
    re-raise it after the IRP is back, since no deadline says it was the requester's.

    :param deadline: the requester's effective deadline (:func:`anyio.current_effective_deadline`
        before the request was built), finite: with none, the I/O manager calls ``call_driver``.
    :returns: what the top dispatch routine returned.
    :raises BugCheck: as :func:`~airp.call_driver`.

    On cancellation: see above; nothing is left pending without a waiter.
    """
    token = _requester_deadline.set(deadline)
    try:
        status = await call_driver(device, irp)
    finally:
        _requester_deadline.reset(token)
    if irp.completed and anyio.current_time() >= deadline:
        # Completed because the deadline cancelled it: the requester gets its cancellation, not a
        # STATUS_CANCELLED result.
        await anyio.lowlevel.checkpoint_if_cancelled()
    return status


# -- the task as the thread (reference 6.6) ------------------------------------------------------

_current_task_io: contextvars.ContextVar[TaskIo | None] = contextvars.ContextVar("airp_task_io", default=None)


def current_task_io() -> TaskIo | None:
    """The :class:`TaskIo` the current task issues requests under, or ``None``."""
    return _current_task_io.get()


class TaskIo:
    """The IRP list of one requester: the Windows thread's ``IrpList`` for a task.

    Made by :func:`task_io`.  The I/O manager charges every request sent while it is current (in
    this task, and in tasks started from inside it) to it, and removes the request again when the
    request completes.  When the ``async with`` block exits, every request still outstanding is
    cancelled and waited for (``IoCancelThreadIo``).

    :ivar closed: True once the block has exited; requests sent afterwards are not charged.
    """

    __slots__ = ("__weakref__", "_irps", "closed")

    def __init__(self) -> None:
        self._irps: dict[Irp, None] = {}
        self.closed = False

    @property
    def outstanding(self) -> list[Irp]:
        """The requests charged here that have not completed yet, oldest first."""
        return [irp for irp in self._irps if not irp.completed]

    def __len__(self) -> int:
        return len(self._irps)

    def _charge(self, irp: Irp) -> None:
        self._irps[irp] = None
        irp.owner = self

    def _release(self, irp: Irp) -> None:
        self._irps.pop(irp, None)

    async def cancel(self, file_object: FileObject | None = None, *, limit: float | None = None) -> int:
        """``CancelIo``: cancel the outstanding requests (of *file_object* only, if given) and wait.

        Each request is cancelled with :func:`~airp.cancel_irp`; then the call waits until all of
        them have completed, shielded and bounded by the cancel-wait limit (requests past it are
        disowned and reported with :class:`DriverCancelTimeoutWarning`).

        On cancellation: the wait is shielded, so it completes (bounded) first; the cancellation is
        raised at the next checkpoint of the caller's scope.

        :param file_object: only requests issued for this file object (a handle's
            ``file_object``), as ``NtCancelIoFile``.
        :param limit: overrides the run's cancel-wait limit.
        :returns: how many requests were cancelled.
        :raises TypeError: if *file_object* is not a file object or *limit* not a number of seconds.
        :raises ValueError: if *limit* is negative or NaN.
        """
        if file_object is not None and not isinstance(file_object, FileObject):
            raise TypeError(
                "cancel(file_object): file_object must be a FileObject (a handle's file_object) or None, got"
                f" {type(file_object).__name__} {file_object!r}"
            )
        if limit is not None:
            _check_limit(limit, "cancel(limit): limit")
        targets = [
            irp
            for irp in self._irps
            if not irp.completed and (file_object is None or irp.file_object is file_object)
        ]
        return await cancel_and_wait(targets, limit=limit, reason="cancel_io")

    def __repr__(self) -> str:
        return f"<TaskIo outstanding={len(self.outstanding)}{' closed' if self.closed else ''}>"


def charge_to_current_task(irp: Irp) -> None:
    """Put *irp* on the list of the current :func:`task_io` block, if one is open (6.6).

    The request's final stage takes it off again (:func:`release_from_task`).
    """
    tio = current_task_io()
    if tio is not None and not tio.closed:
        tio._charge(irp)


def release_from_task(irp: Irp) -> None:
    """Take a completed request off the :func:`task_io` list it was charged to, if any."""
    owner = irp.owner
    if isinstance(owner, TaskIo):
        owner._release(irp)


async def cancel_and_wait(irps: list[Irp], *, limit: float | None = None, reason: str | None = None) -> int:
    """Cancel every IRP in *irps* that is not complete, then wait for all of them, shielded, bounded.

    The IRPs must be ones whose completion the caller waits for through ``await irp`` (requests the
    I/O manager built), not IRPs handed back to a driver with STATUS_MORE_PROCESSING_REQUIRED.

    :returns: how many IRPs were cancelled.
    :raises Exception: the first exception a cancel routine raised, after every IRP was cancelled
        and waited for.
    """
    irps = [irp for irp in irps if not irp.completed]
    if not irps:
        return 0
    error: Exception | None = None
    with anyio.CancelScope(shield=True):
        for irp in irps:
            if not irp.completed:
                try:
                    cancel_irp(irp, reason=reason)
                except Exception as raised:  # cancel_irp completed that IRP; cancel the others first
                    error = error or raised
        if limit is None:
            # One bound for the lot: the longest any of them is entitled to (IRPs of different
            # I/O managers may carry different limits).
            limit = max(_limit_for(irp) for irp in irps)
        with anyio.move_on_after(limit):
            for irp in irps:
                if not irp.completed:
                    waiter = irp._waiter
                    if waiter is None:
                        waiter = irp._waiter = new_waiter()
                    await waiter.wait()  # type: ignore[attr-defined]
        for irp in irps:
            if not irp.completed:
                _disown(irp, limit)
    if error is not None:
        raise error
    return len(irps)


@asynccontextmanager
async def task_io() -> AsyncIterator[TaskIo]:
    """Charge the requests this task issues to the block; cancel what is left when it exits.

    The task-as-thread mapping of reference 6.6::

        async with airp.task_io():
            pending = await handle.read_overlapped(512)   # charged to the block
            ...                                           # cancelled here, or the block exits
        # every request issued inside has completed (or was disowned and reported) by now

    Requests sent through a :class:`~airp.FileHandle` (including ``*_overlapped`` ones that are
    never awaited) while the block is current are recorded, and dropped from it when they complete.
    When the block exits for any reason (the end of the block, an exception, the task being
    cancelled or a ``fail_after`` expiring) the outstanding ones are cancelled and waited for,
    shielded and bounded by the cancel-wait limit (``IoCancelThreadIo``); an exception or a
    cancellation then continues to propagate.  A requester awaiting its own request needs no block:
    the wait itself cancels the request when the waiting task is cancelled.

    The block is recorded in a :class:`contextvars.ContextVar`, so it covers this task and tasks
    started from inside it (a task group opened in the block); a task started into an outer task
    group from inside the block also inherits it, and its requests sent after the block has exited
    are not charged anywhere.  Blocks nest: requests go to the innermost.

    On cancellation: the exit is shielded and bounded; the cancellation propagates afterwards.
    """
    tio = TaskIo()
    token = _current_task_io.set(tio)
    try:
        yield tio
    finally:
        _current_task_io.reset(token)
        tio.closed = True
        try:
            await cancel_and_wait(list(tio._irps), reason="task_io ended")
        finally:
            tio._irps.clear()


# -- the requester's deadline, read once per request -----------------------------------------------


def _find_backend_deadline() -> float:
    # The first request, and the first after the process switched backends: find the running
    # backend the way anyio does (through sniffio), keep its current_effective_deadline.
    global _backend_deadline
    method = anyio.lowlevel.current_token().backend_class.current_effective_deadline
    _backend_deadline = method
    return method()  # this run's, whatever another thread stored meanwhile


#: The running backend's own ``current_effective_deadline`` (a classmethod of anyio's backend
#: class).  A memo of which backend the process runs, not per-run state: every asyncio run has the
#: same backend class, and so does every trio run.
_backend_deadline: Callable[[], float] = _find_backend_deadline


def current_effective_deadline() -> float:
    """:func:`anyio.current_effective_deadline`, without finding the backend on every call.

    The I/O manager reads the requester's deadline once per request (``IoManager._send``, then :func:`call_driver_for_requester`), and
    anyio's front finds the running backend each time: a ``sniffio`` look-up and a dict look-up
    before the backend walks the cancel scopes, about 40% of the call.  This calls the backend's
    own method, found once; the walk, and so the answer, are anyio's: the nearest deadline of the
    enclosing ``move_on_after`` / ``fail_after`` scopes (up to a shield), ``-inf`` in a scope
    already cancelled, ``inf`` with none.

    A backend's method called while the other backend runs raises ``RuntimeError`` (asyncio finds
    no running loop, trio no current task): the backend is then found again, so a process may
    switch backends between runs.  (Runs of both backends at once in two threads stay correct,
    each call finding its own backend, but pay that look-up and a caught exception per call.)
    Like :class:`~airp._shell._waiter.Waiter`, this does not support trio in guest mode on an
    asyncio loop.

    :returns: the effective deadline on the run's clock.
    :raises NoEventLoopError: outside a run, as anyio's.
    """
    try:
        return _backend_deadline()
    except RuntimeError:
        return _find_backend_deadline()
