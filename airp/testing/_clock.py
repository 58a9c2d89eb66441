"""Virtual clocks for asyncio and trio with one interface.

Both clocks start at ``0.0`` and move only when the run is idle (autojump) or when a test calls
:meth:`VirtualClock.jump`. A virtual hour of ``anyio.sleep`` takes well under a millisecond of real
time, and no test depends on the speed of the machine it runs on.

* trio: a :class:`trio.testing.MockClock` with ``autojump_threshold=0``, passed to the run as
  ``("trio", {"clock": ...})``.
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
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    import trio.testing

__all__ = [
    "AsyncioVirtualClock",
    "TrioVirtualClock",
    "VirtualClock",
    "VirtualTimeEventLoop",
    "clock_of",
    "virtual_anyio_backend",
    "virtual_clock_for",
]

BackendName = Literal["asyncio", "trio"]

#: Idle loop iterations (nothing ready, no I/O) before the asyncio clock jumps to the next timer.
#: They let a worker thread that is about to call ``call_soon_threadsafe`` get the GIL, so that a
#: freshly scheduled callback runs before virtual time moves.
IDLE_CYCLES_BEFORE_JUMP = 3


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


def _check_jump(seconds: float) -> float:
    seconds = float(seconds)
    if math.isnan(seconds) or seconds < 0:
        raise ValueError(f"time can only jump forwards, by a number of seconds >= 0, not {seconds!r}")
    return seconds


class _VirtualSelector(selectors.DefaultSelector):
    """The default selector, with waits replaced by virtual-time jumps."""

    _airp_clock: AsyncioVirtualClock | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        clock = self._airp_clock
        if clock is None or timeout == 0:
            return super().select(timeout)
        # The loop has nothing ready: this is where a real loop would sleep. Poll I/O first.
        events: list[tuple[selectors.SelectorKey, int]] = super().select(0)
        if events:
            clock._idle_cycles = 0
            return events
        if clock._idle_waiters:
            # Quiescence waiters take priority over the autojump (as trio's wait_all_tasks_blocked
            # does over MockClock's autojump): wake them without moving time.
            clock._idle_cycles = 0
            clock._wake_idle_waiters()
            return events
        if timeout is None:
            # No timer at all: only I/O or another thread can wake the loop. Block for real.
            clock._idle_cycles = 0
            return super().select(None)
        if clock._idle_cycles < IDLE_CYCLES_BEFORE_JUMP:
            clock._idle_cycles += 1
            time.sleep(0)  # let worker threads run
            return events
        clock._idle_cycles = 0
        if clock.autojump:
            clock._time += timeout
            return events
        # autojump off: wait for real time, as a normal loop would (jump() moves time by hand)
        return super().select(timeout)


class VirtualTimeEventLoop(asyncio.SelectorEventLoop):
    """An asyncio event loop that runs on a :class:`AsyncioVirtualClock`.

    ``time()`` reads the clock; when no callback is ready, no I/O is pending and a timer is
    scheduled, the loop lets :data:`IDLE_CYCLES_BEFORE_JUMP` idle iterations pass and then moves the
    clock straight to that timer. Real I/O (sockets, pipes, ``call_soon_threadsafe``) still works.
    """

    def __init__(self, clock: AsyncioVirtualClock) -> None:
        selector = _VirtualSelector()
        selector._airp_clock = clock
        super().__init__(selector)
        self.virtual_clock = clock
        clock._loops += 1

    def time(self) -> float:
        return self.virtual_clock._time


class AsyncioVirtualClock:
    """Virtual time for asyncio: make loops with :meth:`make_loop` (the ``loop_factory``).

    :param autojump: jump to the next timer when the loop is idle (default). With ``False`` time
        moves only through :meth:`jump`, and an idle loop with a pending timer waits in real time.
    """

    backend: BackendName = "asyncio"

    def __init__(self, *, autojump: bool = True) -> None:
        self._time = 0.0
        self.autojump = autojump
        self._idle_cycles = 0
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


class TrioVirtualClock:
    """Virtual time for trio: a :class:`trio.testing.MockClock` behind the common interface.

    :param autojump: ``autojump_threshold=0`` when true (default), infinite (no autojump) when false.
    """

    backend: BackendName = "trio"

    def __init__(self, *, autojump: bool = True) -> None:
        import trio.testing

        self.mock_clock: trio.testing.MockClock = trio.testing.MockClock(
            autojump_threshold=0 if autojump else math.inf
        )

    def now(self) -> float:
        return float(self.mock_clock.current_time())

    @property
    def current_time(self) -> float:
        return self.now()

    def jump(self, seconds: float) -> None:
        self.mock_clock.jump(_check_jump(seconds))

    def anyio_backend(self) -> tuple[str, dict[str, Any]]:
        return ("trio", {"clock": self.mock_clock})

    def __repr__(self) -> str:
        return f"<TrioVirtualClock time={self.now()!r}>"


def virtual_clock_for(backend: str, *, autojump: bool = True) -> AsyncioVirtualClock | TrioVirtualClock:
    """Return a fresh virtual clock for *backend* (``"asyncio"`` or ``"trio"``).

    :raises ValueError: for any other backend name.
    """
    if backend == "asyncio":
        return AsyncioVirtualClock(autojump=autojump)
    if backend == "trio":
        return TrioVirtualClock(autojump=autojump)
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
        mock = options.get("clock")
        if mock is None:
            return None
        try:
            import trio.testing
        except ImportError:  # pragma: no cover - trio is optional
            return None
        if isinstance(mock, trio.testing.MockClock):
            clock = TrioVirtualClock.__new__(TrioVirtualClock)
            clock.mock_clock = mock
            return clock
    return None
