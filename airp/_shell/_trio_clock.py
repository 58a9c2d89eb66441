"""Virtual time on trio: a clock under trio's run loop that jumps when trio would sleep.

trio asks its clock how long to sleep only when no task is runnable, so that question is the
moment the run is idle.  :class:`TrioVirtualClock` answers it by moving time to the next deadline
and saying "sleep 0", which costs nothing more than the question.

The clock also owns a heap of sleeping tasks, for :func:`airp.delay`: a task parks itself with
``trio.lowlevel.wait_task_rescheduled`` and the clock reschedules it when its time comes.  A
``trio.sleep`` is a cancel scope with a deadline, and every wake-up is that scope raising and
catching ``Cancelled``; a parked task is woken by a plain reschedule.

trio is imported only when a trio run uses this module, so that importing airp does not import
trio.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from typing import Any

from ._virtual_time import (
    THREAD_POLL_SECONDS,
    BackendName,
    DeadlockReporters,
    VirtualTimeDeadlock,
    check_jump,
)

__all__ = ["TrioVirtualClock", "running_trio_clock", "trio_delay", "trio_wakeable_delay"]

#: What the clock answers when it must not jump and nothing is due: trio caps it anyway.
_LONG_SLEEP = 86_400.0

_heappush = heapq.heappush
_heappop = heapq.heappop


class _Sleeper:
    """A task parked in the clock's heap; ``task`` is ``None`` once it was cancelled."""

    __slots__ = ("task",)

    def __init__(self, task: Any) -> None:
        self.task = task

    def wake(self) -> None:
        """End the sleep early (a plain function may call it): the task resumes normally."""
        task = self.task
        if task is not None:
            self.task = None
            _TrioCalls.reschedule(task)

    def abort(self, raise_cancel: Any) -> Any:
        # Cancelled while asleep: leave the entry in the heap (it is skipped when it comes up).
        self.task = None
        return _TrioCalls.abort_succeeded


class _TrioJumpClock:
    """The ``trio.abc.Clock`` a :class:`TrioVirtualClock` gives trio.

    Time holds still while a worker thread is in flight or :func:`~airp.testing.wait_until_quiet`
    waits (trio's own ``wait_all_tasks_blocked`` then wakes first).
    """

    def __init__(self, owner: TrioVirtualClock) -> None:
        self.owner = owner
        self.time = 0.0
        self.sleepers: list[tuple[float, int, _Sleeper]] = []
        self.order = itertools.count()
        self.limiter: Any = None

    def start_clock(self) -> None:
        pass

    def current_time(self) -> float:
        return self.time

    def deadline_to_sleep_time(self, deadline: float) -> float:
        # Called by trio's run loop each pass in which no task is runnable.
        sleepers = self.sleepers
        while sleepers and sleepers[0][2].task is None:
            _heappop(sleepers)
        head = sleepers[0][0] if sleepers else math.inf
        now = self.time
        if deadline <= now:
            # trio expires its own deadlines in this pass; sleepers due at the same instant wake in
            # a later one, so that a cancel scope whose deadline ties with a sleep cancels it (as
            # it does a trio.sleep), whichever was set first.
            return 0.0
        if head <= now:
            self.wake_due()
            return 0.0
        owner = self.owner
        if owner._quiet:
            return _LONG_SLEEP  # wait_all_tasks_blocked's zero cushion wins: the waiters wake first
        if _trio_threads_in_flight(self):
            return THREAD_POLL_SECONDS  # real seconds: the thread's result wakes the run sooner
        target = head if head < deadline else deadline
        if target == math.inf:
            if owner.deadlock_error and not owner._deadlock_pending and _trio_deadlocked():
                # Nothing can wake the run.  Raising here would be a TrioInternalError: hand the
                # error to the main task instead, from trio's run_sync_soon task (as trio delivers
                # ^C).
                import trio

                owner._deadlock_pending = True
                trio.lowlevel.current_trio_token().run_sync_soon(owner._deliver_deadlock)
                return 0.0
            return _LONG_SLEEP
        if not owner.autojump:
            return _LONG_SLEEP  # time moves only through jump(); I/O still wakes the run
        self.time = target
        if head < deadline:
            self.wake_due()
        return 0.0

    def wake_due(self) -> None:
        """Reschedule every parked task whose time has come, in the order they were parked."""
        reschedule = _TrioCalls.reschedule  # loaded: a sleeper was parked
        sleepers = self.sleepers
        now = self.time
        while sleepers and sleepers[0][0] <= now:
            sleeper = _heappop(sleepers)[2]
            task = sleeper.task
            if task is not None:
                sleeper.task = None
                reschedule(task)


def _trio_deadlocked() -> bool:
    """Whether nothing but a task could wake the idle trio run, which has no deadline."""
    import trio

    stats = trio.lowlevel.current_statistics()
    if stats.run_sync_soon_queue_size:
        return False
    io = stats.io_statistics
    runner = _trio_runner()
    # epoll/kqueue count the tasks waiting on a file descriptor; Windows, overlapped waits and
    # monitors.  One of them is trio's own run_sync_soon task, reading its wake-up socket (which
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


def _trio_threads_in_flight(clock: _TrioJumpClock) -> bool:
    # trio.to_thread.run_sync (anyio's to_thread on trio too) holds a token of the limiter from the
    # call until its result is back in the run.  The limiter lives as long as the run, as the clock.
    limiter = clock.limiter
    if limiter is None:
        import trio

        limiter = clock.limiter = trio.to_thread.current_default_thread_limiter()
    return bool(limiter.borrowed_tokens > 0)


class TrioVirtualClock:
    """Virtual time for trio: a clock that jumps when trio would sleep, behind the common interface.

    Pass ``("trio", {"clock": clock.trio_clock})`` to a run (:meth:`anyio_backend` does).  The
    clock moves only when every task is blocked, no worker thread is in flight and no
    :func:`~airp.testing.wait_until_quiet` waits; then it jumps straight to the next deadline or
    parked task.  Call :func:`~airp.testing.wait_until_quiet` rather than
    ``trio.testing.wait_all_tasks_blocked`` to wait without moving time: trio's own call only wakes
    before a jump while airp's waits.

    :param autojump: jump when idle (default); with ``False`` time moves only through :meth:`jump`.
    :param deadlock_error: end the run with :class:`VirtualTimeDeadlock` when every task is blocked
        and nothing can wake one (no deadline, no parked task at a finite time, no worker thread in
        flight, no ``wait_until_quiet`` or ``wait_all_tasks_blocked`` waiter, no task waiting on
        I/O, nothing queued by ``run_sync_soon``) instead of hanging in real time (default
        ``True``).  The error is raised into the run's main task where it waits, as trio delivers
        ``KeyboardInterrupt`` (past shields): a nursery it waits in cancels its children and
        re-raises it, so it comes out of ``anyio.run`` or the test.  With ``False`` such a run
        sleeps for real.
    """

    backend: BackendName = "trio"

    def __init__(self, *, autojump: bool = True, deadlock_error: bool = True) -> None:
        self.autojump = autojump
        self.deadlock_error = deadlock_error
        self._deadlock_pending = False
        self._quiet = 0
        self._reporters = DeadlockReporters()
        self._jump_clock = _TrioJumpClock(self)
        #: The object trio runs on (a ``trio.abc.Clock``).
        self.trio_clock: Any = _as_trio_clock(self._jump_clock)

    def now(self) -> float:
        """Return the current virtual time in seconds."""
        return float(self._jump_clock.time)

    @property
    def current_time(self) -> float:
        """The current virtual time in seconds (same as :meth:`now`)."""
        return self.now()

    def jump(self, seconds: float) -> None:
        """Advance virtual time by *seconds* (>= 0) at once.

        Deadlines that fall due fire at the run loop's next pass; tasks parked by
        :func:`airp.delay` whose time has come are rescheduled at once.

        :raises ValueError: if *seconds* is negative or NaN.
        """
        clock = self._jump_clock
        clock.time += check_jump(seconds)
        if clock.sleepers and clock.sleepers[0][0] <= clock.time and _trio_runner() is not None:
            clock.wake_due()

    def anyio_backend(self) -> tuple[str, dict[str, Any]]:
        """Return ``("trio", {"clock": ...})`` for an anyio run on this clock."""
        return ("trio", {"clock": self.trio_clock})

    def _deliver_deadlock(self) -> None:
        # Runs in trio's run_sync_soon task, in the pass after the clock saw the deadlock.
        self._deadlock_pending = False
        runner = _trio_runner()
        main = getattr(runner, "main_task", None)
        if main is None or main._abort_func is None:
            return  # the main task is runnable after all: nothing to deliver
        error = VirtualTimeDeadlock(self.now(), self._reporters.gather())

        def raise_deadlock() -> Any:
            raise error

        main._attempt_abort(raise_deadlock)

    def __repr__(self) -> str:
        return f"<TrioVirtualClock time={self.now()!r} autojump={self.autojump}>"


def _as_trio_clock(clock: _TrioJumpClock) -> Any:
    # trio checks for an instance of trio.abc.Clock; register the class as one on first use, so
    # that importing airp does not import trio.
    import trio

    if not issubclass(_TrioJumpClock, trio.abc.Clock):
        trio.abc.Clock.register(_TrioJumpClock)
    return clock


def running_trio_clock() -> TrioVirtualClock | None:
    """The :class:`TrioVirtualClock` of the current trio run, or ``None`` (another clock, no run)."""
    try:
        import trio

        clock = trio.lowlevel.current_clock()
    except (ImportError, RuntimeError):
        return None
    return clock.owner if isinstance(clock, _TrioJumpClock) else None


class _TrioCalls:
    """trio's low-level calls, looked up once (importing airp must not import trio).

    Loaded by the first sleep on trio; a parked task exists only after that, so the clock and the
    sleepers use them without looking again.
    """

    current_clock: Any = None
    current_task: Any = None
    wait_task_rescheduled: Any = None
    reschedule: Any = None
    abort_succeeded: Any = None
    checkpoint: Any = None
    sleep: Any = None

    @classmethod
    def load(cls) -> type[_TrioCalls]:
        if cls.current_clock is None:
            import trio

            cls.current_clock = trio.lowlevel.current_clock
            cls.current_task = trio.lowlevel.current_task
            cls.wait_task_rescheduled = trio.lowlevel.wait_task_rescheduled
            cls.reschedule = trio.lowlevel.reschedule
            cls.abort_succeeded = trio.lowlevel.Abort.SUCCEEDED
            cls.checkpoint = trio.lowlevel.checkpoint
            cls.sleep = trio.sleep
        return cls


def _park(clock: _TrioJumpClock, when: float) -> _Sleeper:
    """Put the current task in *clock*'s heap until *when*; await ``wait_task_rescheduled(sleeper.abort)`` next."""
    sleeper = _Sleeper(_TrioCalls.current_task())
    _heappush(clock.sleepers, (when, next(clock.order), sleeper))
    return sleeper


async def trio_delay(seconds: float) -> None:
    """:func:`airp.delay` on trio: parked in the clock's heap on a virtual clock, else ``trio.sleep``."""
    calls = _TrioCalls.load()
    clock = calls.current_clock()
    if clock.__class__ is not _TrioJumpClock:
        await calls.sleep(seconds)
        return
    when = clock.time + seconds
    if when <= clock.time:
        await calls.checkpoint()
        return
    await calls.wait_task_rescheduled(_park(clock, when).abort)


async def trio_wakeable_delay(seconds: float, on_park: Callable[[Callable[[], None]], None]) -> bool:
    """Park in the virtual clock's heap for *seconds*, handing *on_park* the function that wakes
    the task early.  Returns False at once (without waiting) if the run is not on a virtual clock.
    """
    calls = _TrioCalls.load()
    clock = calls.current_clock()
    if clock.__class__ is not _TrioJumpClock:
        return False
    sleeper = _park(clock, clock.time + seconds)
    on_park(sleeper.wake)
    await calls.wait_task_rescheduled(sleeper.abort)
    return True
