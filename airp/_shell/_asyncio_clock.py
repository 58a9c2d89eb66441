"""Virtual time on asyncio: an event loop of airp's own, built for it.

:class:`VirtualTimeEventLoop` keeps all of :class:`asyncio.SelectorEventLoop` that deals with the
outside world (sockets, pipes, subprocesses, signals, ``call_soon_threadsafe``, executors) and
replaces the one method that decides what happens next, ``_run_once``:

* **Time is data.**  ``loop.time()`` reads the clock; when the loop is idle it sets the clock to
  the due time of the earliest timer, exactly, and a timer is due when its time is ``<=`` the
  clock.  asyncio's own loop compares against ``time() + clock_resolution``, which at 2**24 s
  rounds to nothing and leaves a due timer never due (the loop spins); this loop has no such cliff
  at any magnitude.  At 10**12 s a float still resolves 122 µs: a shorter sleep there lasts zero
  or one step of the float, and the run goes on.
* **One heap of timers, ordered by (time, order of scheduling).**  ``call_at`` / ``call_later``
  handles and the tasks parked by :func:`airp.delay` share it, so timers due at the same instant
  fire in the order they were set, on every run.
* **No system call when nothing can come from outside.**  With no file descriptor registered but
  the loop's own wake-up pipe and no signal handler, a pass polls nothing; a worker thread in
  flight is waited for (in real time, briefly) before time moves, since its result may yet
  schedule something sooner.
* **A deadlock is an error.**  When nothing is ready, no timer is due at a finite time, no thread
  is in flight and no I/O is watched, the loop raises :class:`VirtualTimeDeadlock` out of
  ``run_forever`` (so out of ``anyio.run`` or the test) instead of sleeping forever.  A task in
  ``anyio.sleep_forever()`` sits on a timer at infinity, which counts as no timer.
* **A sleep the loop owns.**  :meth:`VirtualTimeEventLoop.park` puts the calling task itself in
  the heap: one object is the awaitable the task waits on and the handle the loop runs when it is
  due, with no Future, no TimerHandle and no wake-up Handle in between.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
import logging
import math
import threading
from _thread import _count as _thread_count
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any, TypeVar

from ._virtual_time import (
    THREAD_POLL_SECONDS,
    BackendName,
    DeadlockReporters,
    VirtualTimeDeadlock,
    check_jump,
)

if TYPE_CHECKING:
    import collections
    import selectors
    from concurrent.futures import Executor
    from contextvars import Context

    from typing_extensions import TypeVarTuple, Unpack

    _Ts = TypeVarTuple("_Ts")

_T = TypeVar("_T")

__all__ = ["AsyncioVirtualClock", "VirtualTimeEventLoop", "asyncio_sleeper", "running_loop", "running_virtual_loop"]

_get_running_loop = asyncio._get_running_loop
#: The running asyncio loop, or ``None`` (a C call: cheap enough to ask on every sleep).
running_loop = _get_running_loop
_heappush = heapq.heappush
_heappop = heapq.heappop
_CancelledError = asyncio.CancelledError
_copy_context = contextvars.copy_context

# The states of a parked task, as the states of asyncio.sleep's timer and future: asleep in the
# heap; due (in the ready queue in its turn among the pass's timers, still cancellable, as a timer
# whose callback has not run); cancelled; woken early by wake(); fired (its time has come and the
# wake-up is queued, as a future whose result is set).  A future is "done" from the third on.
_WAITING, _DUE, _CANCELLED, _WOKEN, _FIRED = 0, 1, 2, 3, 4

#: Rebuild the heap once this many of its timers are cancelled and they are half of it.
_PURGE_AT = 64

_INF = math.inf

_SET_RESULT_UNLESS_CANCELLED = asyncio.futures._set_result_unless_cancelled  # type: ignore[attr-defined]


class _ParkedTask(asyncio.Future):  # type: ignore[type-arg]
    """A task asleep in the loop's timer heap: the future it waits on and the handle that wakes it.

    The task yields this object as it would yield a future (it has ``_asyncio_future_blocking``),
    so asyncio's Task registers its wake-up with :meth:`add_done_callback`.  When the time comes
    the loop puts the object itself in its ready queue (it has ``_run`` and ``_cancelled``, as a
    Handle does), and running it steps the task.  ``cancel`` (asyncio's ``Task.cancel`` calls it
    on the future a task waits on) takes it out of the heap and wakes the task with
    ``CancelledError``.

    It is an :class:`asyncio.Future` only for ``isinstance``: anyio's cancel scopes do not cancel a
    task whose future is already done (it will see the cancellation at its next checkpoint), and
    they recognise a done future that way.  None of the C future's state is used (its
    ``__init__`` is never called); every method a task or anyio calls is defined here.
    """

    __slots__ = ("_asyncio_future_blocking", "_callback", "_cancel_msg", "_context", "_home", "_phase")

    # A handle in the ready queue is skipped when ``_cancelled``: a parked task is always run.
    _cancelled = False

    def __init__(self, loop: VirtualTimeEventLoop) -> None:
        self._home = loop
        self._phase = _WAITING
        self._asyncio_future_blocking = False
        self._callback: Callable[[Any], object] | None = None
        self._context: Context | None = None
        self._cancel_msg: object = None

    def __await__(self) -> Generator[Any, None, None]:
        self._asyncio_future_blocking = True
        yield self
        # The task was woken through result(), which raised if the sleep was cancelled.

    __iter__ = __await__

    # -- what asyncio's Task asks of the future it waits on ------------------------------------------

    def get_loop(self) -> VirtualTimeEventLoop:
        return self._home

    def add_done_callback(self, fn: Callable[[Any], object], *, context: Context | None = None) -> None:
        if self._callback is not None:
            raise RuntimeError("a parked task is awaited by one task only")
        self._callback = fn
        self._context = context

    def remove_done_callback(self, fn: Callable[[Any], object]) -> int:
        if self._callback is fn:
            self._callback = None
            return 1
        return 0

    def done(self) -> bool:
        return self._phase >= _CANCELLED

    def cancelled(self) -> bool:
        return self._phase == _CANCELLED

    def result(self) -> None:
        if self._phase == _CANCELLED:
            message = self._cancel_msg
            raise _CancelledError() if message is None else _CancelledError(message)
        if self._phase < _CANCELLED:
            raise asyncio.InvalidStateError("the parked task's time has not come yet")

    def exception(self) -> BaseException | None:
        self.result()
        return None

    def cancel(self, msg: object = None) -> bool:
        phase = self._phase
        if phase >= _CANCELLED:
            return False
        self._phase = _CANCELLED
        self._cancel_msg = msg
        if phase == _WAITING:
            loop = self._home
            loop._timer_cancelled_count += 1  # still in the heap: purged when it reaches the top
            loop._ready.append(self)
        # A due task is in the ready queue already: it wakes with CancelledError when it runs, as a
        # task whose sleep timer had not yet run its callback would.
        return True

    def wake(self) -> None:
        """End the sleep early (a plain function may call it): the task resumes normally."""
        if self._phase != _WAITING:
            return
        self._phase = _WOKEN
        loop = self._home
        loop._timer_cancelled_count += 1  # still in the heap: purged when it reaches the top
        loop._ready.append(self)

    # -- what the loop asks of a handle ------------------------------------------------------------

    def _run(self) -> None:
        if self._phase == _DUE:
            # Its turn among the pass's timers: fire, and wake the task in the next pass, after
            # what the timers before it scheduled (as asyncio.sleep's future wakes its task).
            self._phase = _FIRED
            self._home._ready.append(self)
            return
        callback = self._callback
        if callback is None:
            return  # nobody awaited it (the coroutine was dropped)
        try:
            if self._context is None:
                callback(self)
            else:
                self._context.run(callback, self)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as error:
            self._home.call_exception_handler(
                {"message": "Exception in a task woken by airp.delay", "exception": error, "handle": self}
            )

    def __repr__(self) -> str:
        state = ("waiting", "due", "cancelled", "woken", "fired")[self._phase]
        return f"<airp parked task {state}>"


class _Handle(asyncio.Handle):
    """A Handle made without the per-call debug look-ups (the loop's debug mode uses asyncio's own)."""

    __slots__ = ()

    def __init__(self, callback: Callable[..., object], args: tuple[Any, ...], loop: Any, context: Context) -> None:
        self._callback = callback
        self._args = args
        self._cancelled = False
        self._loop = loop
        self._source_traceback = None
        self._repr = None
        self._context = context


class _TimerHandle(asyncio.TimerHandle):
    """A TimerHandle made and cancelled without the per-call debug look-ups, as :class:`_Handle`.

    ``asyncio.sleep`` (so ``anyio.sleep``) cancels its timer on the way out, fired or not: that
    cancel is on every sleep's path.
    """

    __slots__ = ()

    if TYPE_CHECKING:
        # asyncio's own slots, which the stubs leave out.
        _callback: Any
        _args: Any
        _cancelled: bool
        _loop: Any
        _scheduled: bool

    def cancel(self) -> None:
        if not self._cancelled:
            if self._scheduled:
                self._loop._timer_cancelled_count += 1
            self._cancelled = True
            self._callback = None
            self._args = None

    def __init__(
        self, when: float, callback: Callable[..., object], args: tuple[Any, ...], loop: Any, context: Context
    ) -> None:
        # _Handle's stores written out rather than called: this runs on every call_later.
        self._callback = callback
        self._args = args
        self._cancelled = False
        self._loop = loop
        self._source_traceback = None
        self._repr = None
        self._context = context
        self._when = when
        self._scheduled = True


_new_parked = _ParkedTask.__new__


def _threads_in_flight(loop: VirtualTimeEventLoop) -> bool:
    """Whether a worker thread may still hand a result back to *loop*.

    Counted: ``loop.run_in_executor`` calls (``asyncio.to_thread``, ``getaddrinfo``) and anyio's
    worker threads on the default limiter (``anyio.to_thread.run_sync``), which hold a token from
    the call until the caller has its result.  A thread started any other way is not seen.
    """
    if loop._executor_jobs:
        return True
    limiter = loop._thread_limiter
    if limiter is None:
        # Looked up once per loop: the default limiter lives as long as the run (a RunVar).
        try:
            import anyio.to_thread

            limiter = loop._thread_limiter = anyio.to_thread.current_default_thread_limiter()
        except Exception:  # not inside an anyio run
            limiter = None
    return limiter is not None and limiter.borrowed_tokens > 0


def _waitpid_threads() -> bool:
    # asyncio's ThreadedChildWatcher waits for a subprocess on a thread of this name; the process's
    # exit comes back through call_soon_threadsafe.  Looked at only before declaring a deadlock:
    # virtual time may move while a subprocess runs, as it does while a socket waits.
    return any(t.name.startswith("asyncio-waitpid-") for t in threading.enumerate())


class VirtualTimeEventLoop(asyncio.SelectorEventLoop):
    """An asyncio event loop that runs on an :class:`AsyncioVirtualClock`.

    Everything asyncio and anyio need works as on a :class:`asyncio.SelectorEventLoop` (tasks,
    futures, ``call_soon_threadsafe``, executors, ``anyio.to_thread``, sockets, pipes,
    subprocesses, async generator shutdown).  What differs is when time moves: only when nothing
    is ready, straight to the next timer (see the module's documentation), and a run that nothing
    can wake ends with :class:`VirtualTimeDeadlock`.

    :param clock: the clock this loop reads and moves.
    """

    if TYPE_CHECKING:
        # BaseEventLoop's and SelectorEventLoop's own state, which the stubs leave out.
        _ready: collections.deque[Any]
        _selector: selectors.BaseSelector
        _debug: bool
        _stopping: bool
        _closed: bool
        _timer_cancelled_count: int
        _signal_handlers: dict[int, Any]
        _current_handle: Any

        def _check_closed(self) -> None: ...
        def _check_thread(self) -> None: ...
        def _check_callback(self, callback: object, method: str) -> None: ...
        def _process_events(self, event_list: list[Any]) -> None: ...

    def __init__(self, clock: AsyncioVirtualClock) -> None:
        #: run_in_executor calls whose result has not been delivered to the loop yet.
        self._executor_jobs = 0
        self._thread_limiter: Any = None
        self._timers: list[tuple[float, int, Any]] = []
        self._timer_order = itertools.count()
        super().__init__()
        self.virtual_clock = clock
        # The selector's own table of registered file descriptors (the wake-up pipe is one): a
        # dict, so that "is anything but the pipe watched?" costs one C call per pass.
        self._watched: dict[int, Any] = self._selector._fd_to_key  # type: ignore[attr-defined]
        clock._loops += 1

    # -- time ----------------------------------------------------------------------------------------

    def time(self) -> float:
        return self.virtual_clock._time

    def call_soon(
        self, callback: Callable[[Unpack[_Ts]], object], *args: Unpack[_Ts], context: Context | None = None
    ) -> asyncio.Handle:
        if self._debug:
            return super().call_soon(callback, *args, context=context)
        if self._closed:
            raise RuntimeError("Event loop is closed")
        handle = _Handle(callback, args, self, _copy_context() if context is None else context)
        self._ready.append(handle)
        return handle

    def call_later(
        self, delay: float, callback: Callable[[Unpack[_Ts]], object], *args: Unpack[_Ts], context: Context | None = None
    ) -> asyncio.TimerHandle:
        if self._debug or delay is None:
            return super().call_later(delay, callback, *args, context=context)
        return self.call_at(self.virtual_clock._time + delay, callback, *args, context=context)

    def call_at(
        self, when: float, callback: Callable[[Unpack[_Ts]], object], *args: Unpack[_Ts], context: Context | None = None
    ) -> asyncio.TimerHandle:
        if when is None:
            raise TypeError("when cannot be None")
        if when != when:
            raise ValueError("a timer's time cannot be NaN")
        if self._closed:
            raise RuntimeError("Event loop is closed")
        if self._debug:
            self._check_thread()
            self._check_callback(callback, "call_at")
            timer: Any = asyncio.TimerHandle(when, callback, args, self, context)
            if timer._source_traceback:
                del timer._source_traceback[-1]
            timer._scheduled = True
        else:
            timer = _TimerHandle(when, callback, args, self, _copy_context() if context is None else context)
        _heappush(self._timers, (when, next(self._timer_order), timer))
        return timer  # type: ignore[no-any-return]

    def park(self, seconds: float) -> _ParkedTask:
        """Park the awaiting task in the timer heap for *seconds* of virtual time (>= 0).

        ``await loop.park(seconds)`` is the loop-owned form of ``asyncio.sleep(seconds)``: the task
        is woken when the time comes, or with ``CancelledError`` if it is cancelled first.
        ``math.inf`` parks it until it is cancelled (and counts as no timer for deadlock
        detection).
        """
        # Made without an __init__ frame: the task sets _asyncio_future_blocking (in __await__) and
        # the callback (add_done_callback) before anything reads them.
        parked = _new_parked(_ParkedTask)
        parked._home = self
        parked._phase = _WAITING
        parked._callback = None
        _heappush(self._timers, (self.virtual_clock._time + seconds, next(self._timer_order), parked))
        return parked

    # -- the pass ------------------------------------------------------------------------------------

    def _run_once(self) -> None:
        ready = self._ready
        timers = self._timers
        if self._timer_cancelled_count:
            self._drop_cancelled_timers(timers)
        clock = self.virtual_clock
        watched = len(self._watched) > 1 or self._signal_handlers
        if ready or self._stopping:
            if watched:
                self._poll(0)
        elif timers and timers[0][0] <= clock._time:
            pass  # a timer is due (time was moved by hand): not idle
        elif (
            timers
            and not watched
            and not _thread_count()
            and not clock._idle_waiters
            and clock.autojump
            and timers[0][0] != _INF
        ):
            # Idle, with nothing outside that could come first: straight to the next timer.
            clock._time = timers[0][0]
        else:
            self._idle(timers)
        now = clock._time
        while timers and timers[0][0] <= now:
            timer = _heappop(timers)[2]
            if timer.__class__ is _ParkedTask:
                if timer._phase == _WAITING:
                    # Due alone with nothing else ready, nothing could come between its firing and
                    # its wake-up: it wakes in this pass.  Otherwise it takes its turn.
                    timer._phase = _FIRED if not ready and not (timers and timers[0][0] <= now) else _DUE
                    ready.append(timer)
                else:
                    self._timer_cancelled_count -= 1
            elif timer._cancelled:
                self._timer_cancelled_count -= 1
            elif timer._callback is _SET_RESULT_UNLESS_CANCELLED and not ready and not (timers and timers[0][0] <= now):
                # asyncio.sleep's timer (so anyio.sleep's), due alone in a pass with nothing else
                # ready: nothing could run between its callback and the wake-up it schedules, so
                # wake the sleeper now, in this pass, as the callback would in the next.
                timer._scheduled = False
                future, result = timer._args
                if not future.done():
                    future.set_result(result)
            else:
                timer._scheduled = False
                ready.append(timer)
        # Run what is ready now; what these callbacks schedule runs in the next pass.
        if self._debug:
            self._run_ready_debug(ready)
            return
        popleft = ready.popleft
        for _ in range(len(ready)):
            handle = popleft()
            if not handle._cancelled:
                handle._run()

    def _drop_cancelled_timers(self, timers: list[tuple[float, int, Any]]) -> None:
        cancelled = self._timer_cancelled_count
        if cancelled > _PURGE_AT and cancelled * 2 > len(timers):
            kept = []
            for entry in timers:
                timer = entry[2]
                if not _dead(timer):
                    kept.append(entry)
                elif timer.__class__ is not _ParkedTask:
                    timer._scheduled = False
            heapq.heapify(kept)
            timers[:] = kept  # in place: the caller holds the list
            self._timer_cancelled_count = 0
            return
        while timers and _dead(timers[0][2]):
            timer = _heappop(timers)[2]
            if timer.__class__ is not _ParkedTask:
                timer._scheduled = False
            self._timer_cancelled_count -= 1

    def _idle(self, timers: list[tuple[float, int, Any]]) -> None:
        """Nothing is ready: where a real loop would sleep.  Move time, wait, or report a deadlock."""
        clock = self.virtual_clock
        watched = len(self._watched) > 1 or bool(self._signal_handlers)
        if watched and self._poll(0):
            return
        if clock._idle_waiters:
            # Quiescence waiters come before the jump (as trio's wait_all_tasks_blocked comes
            # before MockClock's autojump): wake them without moving time.
            clock._wake_idle_waiters()
            return
        if _thread_count() and _threads_in_flight(self):
            # A jump now could fire a timer before the thread's result arrives: wait for it.  Its
            # call_soon_threadsafe writes to the wake-up pipe, which ends the wait at once.
            self._poll(THREAD_POLL_SECONDS)
            return
        head = timers[0][0] if timers else math.inf
        if head != math.inf:
            if clock.autojump:
                if head > clock._time:
                    clock._time = head
                return
            # Time moves only through jump(): wait in real time, as a normal loop would.
            self._poll(min(head - clock._time, 86_400.0))
            return
        if watched or _waitpid_threads():
            self._poll(None)  # only I/O, a signal or a subprocess can wake the loop now: block for real
            return
        if clock.deadlock_error:
            raise VirtualTimeDeadlock(clock._time, clock._reporters.gather())
        self._poll(None)

    def _poll(self, timeout: float | None) -> bool:
        events = self._selector.select(timeout)
        if events:
            self._process_events(events)
            return True
        return False

    def _run_ready_debug(self, ready: Any) -> None:
        # asyncio's debug mode: report slow callbacks, as BaseEventLoop._run_once does.
        import time as real_time

        for _ in range(len(ready)):
            handle = ready.popleft()
            if handle._cancelled:
                continue
            self._current_handle = handle
            started = real_time.monotonic()
            try:
                handle._run()
            finally:
                self._current_handle = None
            took = real_time.monotonic() - started
            if took >= self.slow_callback_duration:
                logging.getLogger("asyncio").warning("Executing %r took %.3f seconds", handle, took)

    def close(self) -> None:
        super().close()
        self._timers.clear()

    # -- worker threads hold time still ------------------------------------------------------------------

    def run_in_executor(
        self, executor: Executor | None, func: Callable[[Unpack[_Ts]], _T], *args: Unpack[_Ts]
    ) -> asyncio.Future[_T]:
        # Counted so that the clock does not jump while the thread may still hand back a result.
        future = super().run_in_executor(executor, func, *args)
        self._executor_jobs += 1
        future.add_done_callback(self._executor_job_done)
        return future

    def _executor_job_done(self, future: asyncio.Future[Any]) -> None:
        self._executor_jobs -= 1

    async def shutdown_default_executor(self, *args: Any, **kwargs: Any) -> None:
        # The shutdown joins the executor's threads from a thread of its own that reports back
        # with call_soon_threadsafe: a thread in flight like any other, not a deadlock.
        self._executor_jobs += 1
        try:
            await super().shutdown_default_executor(*args, **kwargs)
        finally:
            self._executor_jobs -= 1


def _dead(timer: Any) -> bool:
    if timer.__class__ is _ParkedTask:
        return bool(timer._phase >= _CANCELLED)
    return bool(timer._cancelled)


class AsyncioVirtualClock:
    """Virtual time for asyncio: make loops with :meth:`make_loop` (the ``loop_factory``).

    :param autojump: jump to the next timer when the loop is idle (default). With ``False`` time
        moves only through :meth:`jump`, and an idle loop with a pending timer waits in real time.
    :param deadlock_error: end the run with :class:`VirtualTimeDeadlock` when nothing can wake it
        (no ready callback, no timer at a finite time, no worker thread in flight, no
        ``wait_until_quiet`` waiter, no signal handler, no registered I/O but the loop's own
        wake-up pipe) instead of hanging in real time (default ``True``).  The error is raised out
        of ``run_forever``, so out of ``anyio.run`` or the test; the loop's shutdown then cancels
        the tasks left.  With ``False`` such a loop blocks for real, as a normal one would.
    """

    backend: BackendName = "asyncio"

    def __init__(self, *, autojump: bool = True, deadlock_error: bool = True) -> None:
        self._time = 0.0
        self.autojump = autojump
        self.deadlock_error = deadlock_error
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._loops = 0
        self._reporters = DeadlockReporters()

    def now(self) -> float:
        """Return the current virtual time in seconds."""
        return self._time

    @property
    def current_time(self) -> float:
        """The current virtual time in seconds (same as :meth:`now`)."""
        return self._time

    def jump(self, seconds: float) -> None:
        """Advance virtual time by *seconds* (>= 0) at once; timers due fire at the loop's next pass.

        :raises ValueError: if *seconds* is negative or NaN.
        """
        self._time += check_jump(seconds)

    def make_loop(self) -> VirtualTimeEventLoop:
        """Create an event loop on this clock (use as ``loop_factory``)."""
        return VirtualTimeEventLoop(self)

    def anyio_backend(self) -> tuple[str, dict[str, Any]]:
        """Return ``("asyncio", {"loop_factory": ...})`` for an anyio run on this clock."""
        return ("asyncio", {"loop_factory": self.make_loop})

    async def wait_idle(self) -> None:
        """Wait until the loop has nothing to run and no I/O is ready; virtual time does not move.

        On cancellation: a checkpoint like any other.
        """
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._idle_waiters.append(fut)
        try:
            await fut
        finally:
            if not fut.done():
                fut.cancel()
            if fut in self._idle_waiters:
                self._idle_waiters.remove(fut)

    def _wake_idle_waiters(self) -> None:
        waiters, self._idle_waiters = self._idle_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def __repr__(self) -> str:
        return f"<AsyncioVirtualClock time={self._time!r} autojump={self.autojump}>"


def running_virtual_loop() -> VirtualTimeEventLoop | None:
    """The running asyncio loop if it is a :class:`VirtualTimeEventLoop`, else ``None``."""
    loop = _get_running_loop()
    return loop if isinstance(loop, VirtualTimeEventLoop) else None


def asyncio_sleeper(seconds: float) -> Any:
    """What :func:`airp.delay` awaits on an asyncio loop that is not a :class:`VirtualTimeEventLoop`:
    ``asyncio.sleep(seconds)`` (``anyio.sleep`` is the same call on asyncio)."""
    return asyncio.sleep(seconds)
