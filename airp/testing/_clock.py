"""Virtual clocks for asyncio and trio with one interface.

Both clocks start at ``0.0`` and move only when the run is idle (autojump) or when a test calls
:meth:`VirtualClock.jump`. A virtual hour of ``anyio.sleep`` takes well under a millisecond of real
time, and no test depends on the speed of the machine it runs on.

* trio: a ``trio.abc.Clock`` that jumps to the next deadline when trio asks how long to sleep,
  passed to the run as ``("trio", {"clock": ...})``.
* asyncio: a :class:`VirtualTimeEventLoop` (a :class:`asyncio.SelectorEventLoop` whose ``time()``
  is virtual and whose selector, when nothing is ready and a timer is pending, jumps virtual time to
  that timer instead of sleeping), passed to the run as ``("asyncio", {"loop_factory": ...})``.

Build a clock inside the fixture or the function that starts the run, fresh per run: a clock made at
import time would carry virtual time from one test into the next.
"""

from __future__ import annotations

import asyncio
import math
import selectors
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

if TYPE_CHECKING:
    from concurrent.futures import Executor

    from typing_extensions import TypeVarTuple, Unpack

    _Ts = TypeVarTuple("_Ts")

_T = TypeVar("_T")

__all__ = [
    "AsyncioVirtualClock",
    "VirtualTimeDeadlock",
    "TrioVirtualClock",
    "VirtualClock",
    "VirtualTimeEventLoop",
    "clock_of",
    "virtual_anyio_backend",
    "virtual_clock_for",
]

BackendName = Literal["asyncio", "trio"]

#: How long (real seconds) an idle asyncio loop waits for a worker thread still in flight before it
#: looks again; the thread's ``call_soon_threadsafe`` wakes it sooner.  Virtual time does not move
#: while a thread is in flight, so a thread about to hand back a result is never overtaken.
THREAD_POLL_SECONDS = 0.05


def _threads_in_flight(loop: VirtualTimeEventLoop) -> bool:
    """Whether a worker thread may still hand a result back to *loop*.

    Counted: ``loop.run_in_executor`` calls (``asyncio.to_thread``, ``getaddrinfo``) and anyio's
    worker threads on the default limiter (``anyio.to_thread.run_sync``), which hold a token from
    the call until the caller has its result.  A thread started any other way is not seen.
    """
    if loop._executor_jobs:
        return True
    limiter = loop._airp_thread_limiter
    if limiter is None:
        # Looked up once per loop: the default limiter lives as long as the run (a RunVar), and
        # the lookup costs more than the jump it guards.
        try:
            import anyio.to_thread

            limiter = loop._airp_thread_limiter = anyio.to_thread.current_default_thread_limiter()
        except Exception:  # not inside an anyio run
            return False
    return bool(limiter.borrowed_tokens > 0)


class VirtualClock(Protocol):
    """The interface both virtual clocks offer to tests."""

    backend: BackendName

    def now(self) -> float:
        """Return the current virtual time in seconds."""
        ...

    @property
    def current_time(self) -> float:
        """The current virtual time in seconds (same as :meth:`now`)."""
        ...

    def jump(self, seconds: float) -> None:
        """Advance virtual time by *seconds* (>= 0) at once.

        Timers that fall due fire the next time the event loop looks at them; the caller keeps
        running until its next checkpoint.

        :raises ValueError: if *seconds* is negative or NaN.
        """
        ...

    def anyio_backend(self) -> tuple[str, dict[str, Any]]:
        """Return the ``(backend_name, backend_options)`` pair that runs anyio on this clock."""
        ...


class VirtualTimeDeadlock(RuntimeError):  # noqa: N818 (the name the issue gives it)
    """The run is deadlocked on virtual time: every task is blocked and nothing can wake one.

    Raised by both virtual clocks (unless made with ``deadlock_error=False``) when no callback is
    ready, no timer is scheduled, no worker thread is in flight, no
    :func:`~airp.testing.wait_until_quiet` waits and no I/O other than the event loop's own wake-up
    channel is registered: a real event loop would sleep forever.  The message lists the requests
    still outstanding in the run's I/O managers, each with the device holding it and its driver.

    :ivar now: the virtual time at which the run deadlocked.
    :ivar outstanding: ``(irp, holding_device)`` pairs, oldest first per manager; the device is
        ``None`` for an IRP back with its creator.
    """

    def __init__(self, now: float, outstanding: list[tuple[Any, Any]]) -> None:
        self.now = now
        self.outstanding = outstanding
        lines = [
            f"deadlock on virtual time at t={now!r}: every task is blocked, and no timer, I/O or worker "
            "thread can wake any of them (a real event loop would hang here)"
        ]
        if outstanding:
            lines.append(f"{len(outstanding)} request(s) still outstanding:")
            for irp, device in outstanding:
                holder = f"held by {device!r} (driver {device.driver!r})" if device is not None else "with its creator"
                lines.append(f"  {irp!r} {holder}")
        else:
            lines.append("no request is outstanding in the run's I/O managers")
        super().__init__("\n".join(lines))


def _outstanding_requests() -> list[tuple[Any, Any]]:
    # airp.testing sits above every layer: it may ask the run's I/O managers directly.
    from .._iomanager._manager import run_io_managers
    from .._shell._requester_cancel import holding_device

    found: list[tuple[Any, Any]] = []
    for io in run_io_managers():
        for irp in io.outstanding_requests():
            found.append((irp, holding_device(irp)))
    return found


def _waitpid_threads() -> bool:
    # asyncio's ThreadedChildWatcher waits for a subprocess on a thread of this name.
    return any(t.name.startswith("asyncio-waitpid-") for t in threading.enumerate())


def _asyncio_can_wake(selector: selectors.BaseSelector, loop: VirtualTimeEventLoop) -> bool:
    """Whether anything but a task could still wake an idle *loop* that has no timer."""
    if _threads_in_flight(loop) or getattr(loop, "_signal_handlers", None) or _waitpid_threads():
        return True
    ssock = getattr(loop, "_ssock", None)  # the self-pipe: call_soon_threadsafe and signals
    own = ssock.fileno() if ssock is not None else -1
    return any(key.fd != own for key in selector.get_map().values())


def _check_jump(seconds: float) -> float:
    seconds = float(seconds)
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"time can only jump forwards, by a number of seconds >= 0, not {seconds!r}")
    return seconds


class _VirtualSelector(selectors.DefaultSelector):
    """The default selector, with waits replaced by virtual-time jumps."""

    _airp_clock: AsyncioVirtualClock | None = None
    _airp_loop: VirtualTimeEventLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        clock = self._airp_clock
        if clock is None or timeout == 0:
            return super().select(timeout)
        # The loop has nothing ready: this is where a real loop would sleep. Poll I/O first.
        events: list[tuple[selectors.SelectorKey, int]] = super().select(0)
        if events:
            return events
        if clock._idle_waiters:
            # Quiescence waiters take priority over the autojump (as trio's wait_all_tasks_blocked
            # does over MockClock's autojump): wake them without moving time.
            clock._wake_idle_waiters()
            return events
        loop = self._airp_loop
        if timeout is None:
            # No timer at all: only I/O or another thread can wake the loop.
            if clock.deadlock_error and loop is not None and not _asyncio_can_wake(self, loop):
                # Nothing can: a real loop would hang. End the run (out of run_forever).
                raise VirtualTimeDeadlock(clock._time, _outstanding_requests())
            return super().select(None)  # block for real
        if loop is not None and _threads_in_flight(loop):
            # A jump now could fire a deadline before the thread's result arrives: wait for it.
            return super().select(min(timeout, THREAD_POLL_SECONDS))
        if clock.autojump:
            # Land on the timer's own time, not on time + (when - time), which can be off by one
            # ulp: a model on virtual time must add up exactly as a simulator's clock does.
            scheduled = getattr(loop, "_scheduled", None)
            target = scheduled[0].when() if scheduled else clock._time + timeout
            clock._time = max(clock._time, target)
            return events
        # autojump off: wait for real time, as a normal loop would (jump() moves time by hand)
        return super().select(timeout)


class VirtualTimeEventLoop(asyncio.SelectorEventLoop):
    """An asyncio event loop that runs on a :class:`AsyncioVirtualClock`.

    ``time()`` reads the clock; when no callback is ready, no I/O is pending, no worker thread is in
    flight and a timer is scheduled, the loop moves the clock straight to that timer.  Real I/O
    (sockets, pipes, ``call_soon_threadsafe``) still wakes it.  A worker thread in flight
    (``run_in_executor``, ``anyio.to_thread.run_sync``) holds time still until its result is back.
    """

    def __init__(self, clock: AsyncioVirtualClock) -> None:
        selector = _VirtualSelector()
        selector._airp_clock = clock
        selector._airp_loop = self
        #: run_in_executor calls whose result has not been delivered to the loop yet.
        self._executor_jobs = 0
        self._airp_thread_limiter: Any = None
        super().__init__(selector)
        self.virtual_clock = clock
        clock._loops += 1

    def time(self) -> float:
        return self.virtual_clock._time

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


class AsyncioVirtualClock:
    """Virtual time for asyncio: make loops with :meth:`make_loop` (the ``loop_factory``).

    :param autojump: jump to the next timer when the loop is idle (default). With ``False`` time
        moves only through :meth:`jump`, and an idle loop with a pending timer waits in real time.
    :param deadlock_error: end the run with :class:`VirtualTimeDeadlock` when nothing can wake it
        (no ready callback, no timer, no worker thread in flight, no ``wait_until_quiet`` waiter,
        no signal handler, no registered I/O but the loop's self-pipe) instead of hanging in real
        time (default ``True``).  The error is raised out of ``run_forever``, so out of
        ``anyio.run`` or the test; the loop's shutdown then cancels the tasks left.  With
        ``False`` such a loop blocks for real, as a normal one would.
    """

    backend: BackendName = "asyncio"

    def __init__(self, *, autojump: bool = True, deadlock_error: bool = True) -> None:
        self._time = 0.0
        self.autojump = autojump
        self.deadlock_error = deadlock_error
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._loops = 0

    def now(self) -> float:
        return self._time

    @property
    def current_time(self) -> float:
        return self._time

    def jump(self, seconds: float) -> None:
        self._time += _check_jump(seconds)

    def make_loop(self) -> VirtualTimeEventLoop:
        """Create an event loop on this clock (use as ``loop_factory``)."""
        return VirtualTimeEventLoop(self)

    def anyio_backend(self) -> tuple[str, dict[str, Any]]:
        return ("asyncio", {"loop_factory": self.make_loop})

    async def wait_idle(self) -> None:
        """Wait until the loop has nothing to run and no I/O is ready; virtual time does not move."""
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


class _TrioJumpClock:
    """A ``trio.abc.Clock`` that jumps to the next deadline when trio asks how long to sleep.

    trio asks only when no task is runnable, so that is the moment the run is idle.  Answering by
    moving time to the deadline and saying "sleep 0" costs nothing more than the question, where
    MockClock's autojump takes another pass of the run loop and an extra I/O poll per jump.
    Time holds still while a worker thread is in flight or :func:`~airp.testing.wait_until_quiet`
    waits (trio's own ``wait_all_tasks_blocked`` then wakes first).
    """

    def __init__(self, owner: TrioVirtualClock) -> None:
        self.owner = owner
        self.time = 0.0

    def start_clock(self) -> None:
        pass

    def current_time(self) -> float:
        return self.time

    def deadline_to_sleep_time(self, deadline: float) -> float:
        if deadline <= self.time:
            return 0.0
        owner = self.owner
        if owner._quiet:
            return _LONG_SLEEP  # wait_all_tasks_blocked's zero cushion wins: the waiters wake first
        if _trio_threads_in_flight():
            return THREAD_POLL_SECONDS  # real seconds: the thread's result wakes the run sooner
        if deadline == math.inf and owner.deadlock_error and not owner._deadlock_pending and _trio_deadlocked():
            # Nothing can wake the run. Raising here would be a TrioInternalError: hand the error
            # to the main task instead, from trio's run_sync_soon task (as trio delivers ^C).
            owner._deadlock_pending = True
            import trio

            trio.lowlevel.current_trio_token().run_sync_soon(owner._deliver_deadlock)
            return 0.0
        if not owner.autojump:
            return _LONG_SLEEP  # time moves only through jump(); I/O still wakes the run
        if deadline == math.inf:
            return _LONG_SLEEP
        self.time = deadline
        return 0.0


#: What the trio clock answers when it must not jump and nothing is due: trio caps it anyway.
_LONG_SLEEP = 86_400.0


def _trio_deadlocked() -> bool:
    """Whether nothing but a task could wake the idle trio run, which has no deadline."""
    import trio

    stats = trio.lowlevel.current_statistics()
    if stats.run_sync_soon_queue_size:
        return False
    io = stats.io_statistics
    runner = _trio_runner()
    # epoll/kqueue count the tasks waiting on a file descriptor; Windows, overlapped waits and
    # monitors. One of them is trio's own run_sync_soon task, reading its wake-up socket (which
    # threads and signal handlers write to): that one cannot tell whether anything will come.
    waiting = sum(
        getattr(io, name, 0)
        for name in ("tasks_waiting_read", "tasks_waiting_write", "tasks_waiting_overlapped", "monitors")
    )
    if waiting > _trio_own_waiters(runner):
        return False
    # trio.testing.wait_all_tasks_blocked called directly: trio wakes it after asking the clock.
    return not getattr(runner, "waiting_for_idle", None)


def _trio_own_waiters(runner: Any) -> int:
    # How many of the I/O waiters are trio's run_sync_soon task on its wake-up socket (0 or 1).
    try:
        fd = runner.entry_queue.wakeup.wakeup_sock.fileno()
        waiter = runner.io_manager._registered.get(fd)
    except AttributeError:  # another I/O manager (Windows): assume the usual single waiter
        return 1
    return int(waiter is not None and waiter.read_task is not None)


def _trio_runner() -> Any:
    from trio._core._run import GLOBAL_RUN_CONTEXT  # trio has no public handle on the main task

    return getattr(GLOBAL_RUN_CONTEXT, "runner", None)


def _trio_threads_in_flight() -> bool:
    import trio

    # trio.to_thread.run_sync (anyio's to_thread on trio too) holds a token of the limiter from the
    # call until its result is back in the run.
    return trio.to_thread.current_default_thread_limiter().borrowed_tokens > 0


class TrioVirtualClock:
    """Virtual time for trio: a clock that jumps when trio would sleep, behind the common interface.

    Pass ``("trio", {"clock": clock.trio_clock})`` to a run (:meth:`anyio_backend` does).  The
    clock moves only when every task is blocked, no worker thread is in flight and no
    :func:`~airp.testing.wait_until_quiet` waits; then it jumps straight to the next deadline.
    Call :func:`~airp.testing.wait_until_quiet` rather than ``trio.testing.wait_all_tasks_blocked``
    to wait without moving time: trio's own call only wakes before a jump while airp's waits.

    :param autojump: jump when idle (default); with ``False`` time moves only through :meth:`jump`.
    :param deadlock_error: end the run with :class:`VirtualTimeDeadlock` when every task is blocked
        and nothing can wake one (no deadline, no worker thread in flight, no ``wait_until_quiet``
        or ``wait_all_tasks_blocked`` waiter, no task waiting on I/O, nothing queued by
        ``run_sync_soon``) instead of hanging in real time (default ``True``).  The error is
        raised into the run's main task where it waits, as trio delivers ``KeyboardInterrupt``
        (past shields): a nursery it waits in cancels its children and re-raises it, so it comes
        out of ``anyio.run`` or the test.  With ``False`` such a run sleeps for real.
    """

    backend: BackendName = "trio"

    def __init__(self, *, autojump: bool = True, deadlock_error: bool = True) -> None:
        self.autojump = autojump
        self.deadlock_error = deadlock_error
        self._deadlock_pending = False
        self._quiet = 0
        #: The object trio runs on (a ``trio.abc.Clock``).
        self.trio_clock: Any = _as_trio_clock(_TrioJumpClock(self))

    def now(self) -> float:
        return float(self.trio_clock.time)

    @property
    def current_time(self) -> float:
        return self.now()

    def jump(self, seconds: float) -> None:
        self.trio_clock.time += _check_jump(seconds)

    def anyio_backend(self) -> tuple[str, dict[str, Any]]:
        return ("trio", {"clock": self.trio_clock})

    def _deliver_deadlock(self) -> None:
        # Runs in trio's run_sync_soon task, in the pass after the clock saw the deadlock.
        self._deadlock_pending = False
        runner = _trio_runner()
        main = getattr(runner, "main_task", None)
        if main is None or main._abort_func is None:
            return  # the main task is runnable after all: nothing to deliver
        error = VirtualTimeDeadlock(self.now(), _outstanding_requests())

        def raise_deadlock() -> Any:
            raise error

        main._attempt_abort(raise_deadlock)

    def __repr__(self) -> str:
        return f"<TrioVirtualClock time={self.now()!r} autojump={self.autojump}>"


def _as_trio_clock(clock: _TrioJumpClock) -> Any:
    # trio checks for an instance of trio.abc.Clock; register the class as one on first use, so
    # that importing airp.testing does not import trio.
    import trio

    if not issubclass(_TrioJumpClock, trio.abc.Clock):
        trio.abc.Clock.register(_TrioJumpClock)
    return clock


def virtual_clock_for(
    backend: str, *, autojump: bool = True, deadlock_error: bool = True
) -> AsyncioVirtualClock | TrioVirtualClock:
    """Return a fresh virtual clock for *backend* (``"asyncio"`` or ``"trio"``).

    :param deadlock_error: raise :class:`VirtualTimeDeadlock` when nothing can wake the run.
    :raises ValueError: for any other backend name.
    """
    if backend == "asyncio":
        return AsyncioVirtualClock(autojump=autojump, deadlock_error=deadlock_error)
    if backend == "trio":
        return TrioVirtualClock(autojump=autojump, deadlock_error=deadlock_error)
    raise ValueError(f"no virtual clock for backend {backend!r}; expected 'asyncio' or 'trio'")


def virtual_anyio_backend(backend: str, *, autojump: bool = True) -> tuple[str, dict[str, Any]]:
    """Return ``(backend_name, backend_options)`` for an anyio run on a fresh virtual clock.

    Use it as the value of the ``anyio_backend`` fixture, or as ``anyio.run(main, backend=name,
    backend_options=options)``. :func:`clock_of` gets the clock back from the pair.
    """
    return virtual_clock_for(backend, autojump=autojump).anyio_backend()


def clock_of(anyio_backend: object) -> AsyncioVirtualClock | TrioVirtualClock | None:
    """Return the virtual clock inside an ``anyio_backend`` value, or ``None`` if it has none."""
    if not isinstance(anyio_backend, tuple) or len(anyio_backend) != 2:
        return None
    name, options = anyio_backend
    if not isinstance(options, dict):
        return None
    if name == "asyncio":
        factory: Callable[[], Any] | None = options.get("loop_factory")
        owner = getattr(factory, "__self__", None)
        return owner if isinstance(owner, AsyncioVirtualClock) else None
    if name == "trio":
        trio_clock = options.get("clock")
        if isinstance(trio_clock, _TrioJumpClock):
            return trio_clock.owner
    return None
