"""The run's clock: making one, finding it, the sleep it owns (:func:`delay`), its deadlock reporters.

A thin front over the two backends: :mod:`._asyncio_clock` and :mod:`._trio_clock` each know
whether the run is on one of airp's virtual clocks; this module asks them, so that callers
(drivers, the I/O manager, the simulator) never name a backend.
"""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel

from ._asyncio_clock import (
    AsyncioVirtualClock,
    VirtualTimeEventLoop,
    asyncio_sleeper,
    running_loop,
    running_virtual_loop,
)
from ._trio_clock import TrioVirtualClock, running_trio_clock, trio_delay, trio_wakeable_delay
from ._virtual_time import DeadlockReporter, DeadlockReporters, check_seconds

__all__ = [
    "WakeableDelay",
    "add_deadlock_reporter",
    "clock_of",
    "current_virtual_clock",
    "delay",
    "discard_deadlock_reporter",
    "virtual_anyio_backend",
    "virtual_clock_for",
]


async def delay(seconds: float) -> None:
    """Wait *seconds* of the run's time: the sleep for service times and hardware delays.

    Windows' ``KeDelayExecutionThread``.  On airp's virtual time the waiting task is parked in the
    clock's own timer heap and woken when its time comes: on asyncio no Future, TimerHandle and
    wake-up Handle are made for it, and on trio no cancel scope with a deadline (whose every
    wake-up is a ``Cancelled`` raised and caught), which makes a simulation's sleeps several times
    cheaper than ``anyio.sleep``.  On any other clock it is :func:`anyio.sleep`.  At one instant,
    on asyncio, sleepers wake in the order they went to sleep (a sleeping task wakes as one in
    ``asyncio.sleep`` does); on trio, a cancel scope's deadline of the same instant expires first,
    and trio runs the woken tasks in an order of its choosing.

    ``delay(math.inf)`` waits until cancelled, and counts as waiting on nothing when the run looks
    for a deadlock (as ``anyio.sleep_forever`` does).

    On cancellation: as :func:`anyio.sleep`: the sleep is a checkpoint, and a cancellation of the
    enclosing scope (a timeout, a cancelled task group) ends it at once with the backend's
    cancellation exception.  Nothing is left behind in the clock.

    :param seconds: how long to wait, a number >= 0 (``0`` is a plain checkpoint).
    :raises TypeError: if *seconds* is not a number.
    :raises ValueError: if *seconds* is negative or NaN.
    """
    if seconds.__class__ is not float or not seconds >= 0.0:
        seconds = check_seconds(seconds, "delay")
    loop = running_loop()
    if loop.__class__ is VirtualTimeEventLoop:
        await loop.park(seconds)
    elif loop is not None:
        await asyncio_sleeper(seconds)
    else:
        await trio_delay(seconds)


class WakeableDelay:
    """A :func:`delay` that a plain function (a cancel routine) can end early with :meth:`wake`.

    On virtual time it sleeps on the clock's own timer heap like :func:`delay`; elsewhere it is an
    Event waited on under a timeout.  Waking it is not a cancellation: the waiter resumes normally,
    so a cancellation of the waiter's own scope that arrives meanwhile is still delivered as such.
    """

    __slots__ = ("_seconds", "_wake", "_woken")

    def __init__(self, seconds: float) -> None:
        self._seconds = check_seconds(seconds)
        self._woken = False
        self._wake: Any = None

    @property
    def woken(self) -> bool:
        """True once :meth:`wake` has been called."""
        return self._woken

    def wake(self) -> None:
        """End the wait now (or make it end at once if it has not begun).  Never suspends."""
        if self._woken:
            return
        self._woken = True
        if self._wake is not None:
            self._wake()

    def _on_park(self, wake: Any) -> None:
        self._wake = wake

    async def wait(self) -> bool:
        """Wait until the time has passed or :meth:`wake` is called; once only.

        On cancellation: as :func:`delay`: the cancellation propagates and nothing is left behind.

        :returns: True if woken early, False if the time ran out.
        """
        if self._woken:
            await anyio.lowlevel.checkpoint()
            return True
        loop = running_loop()
        if loop.__class__ is VirtualTimeEventLoop:
            parked = loop.park(self._seconds)
            self._wake = parked.wake
            await parked
            return self._woken
        # Not asyncio: trio, parked on its virtual clock if the run has one.
        if loop is None and await trio_wakeable_delay(self._seconds, self._on_park):
            return self._woken
        event = anyio.Event()
        self._wake = event.set
        with anyio.move_on_after(self._seconds):
            await event.wait()
        return self._woken


def current_virtual_clock() -> AsyncioVirtualClock | TrioVirtualClock | None:
    """The airp virtual clock the current run is on, or ``None`` (real time, or no run)."""
    loop = running_virtual_loop()
    if loop is not None:
        return loop.virtual_clock
    return running_trio_clock()


def _reporters() -> DeadlockReporters | None:
    clock: Any = current_virtual_clock()
    return None if clock is None else clock._reporters


def add_deadlock_reporter(reporter: DeadlockReporter) -> bool:
    """Register *reporter* with the current run's virtual clock, if the run has one.

    Called by what holds IRPs or waits: an I/O manager when it joins a run, a device's task group
    when it starts, a remove lock while it waits.  The clock asks it (``_report_deadlock``) only
    when the run deadlocks.  Weakly held: a reporter that is collected drops out by itself.

    :returns: True if the run is on an airp virtual clock (the reporter was registered).
    """
    reporters = _reporters()
    if reporters is None:
        return False
    reporters.add(reporter)
    return True


def discard_deadlock_reporter(reporter: DeadlockReporter) -> None:
    """Take *reporter* back from the current run's clock (nothing if it was not registered)."""
    reporters = _reporters()
    if reporters is not None:
        reporters.discard(reporter)


# -- making a clock for a run ------------------------------------------------------------------------


def virtual_clock_for(
    backend: str, *, autojump: bool = True, deadlock_error: bool = True
) -> AsyncioVirtualClock | TrioVirtualClock:
    """Return a fresh virtual clock for *backend* (``"asyncio"`` or ``"trio"``).

    Build one per run, inside the fixture or function that starts the run: a clock made at import
    time would carry virtual time from one run into the next.

    :param autojump: jump to the next timer when the run is idle (default); with ``False`` time
        moves only through ``jump()``.
    :param deadlock_error: raise :class:`~airp.testing.VirtualTimeDeadlock` when nothing can wake
        the run (default), instead of hanging as a real event loop would.
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

    :raises ValueError: for a backend other than ``"asyncio"`` and ``"trio"``.
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
        owner = getattr(options.get("loop_factory"), "__self__", None)
        return owner if isinstance(owner, AsyncioVirtualClock) else None
    if name == "trio":
        owner = getattr(options.get("clock"), "owner", None)
        return owner if isinstance(owner, TrioVirtualClock) else None
    return None
