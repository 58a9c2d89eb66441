"""Plain callbacks at a point of the run's clock, on asyncio and on trio, without a task per call.

The requester's side of cancellation needs "call this at the requester's deadline" while the
requester's own task is busy running a driver's dispatch routine under a shield (see
:mod:`airp._requester`).  A task per request would cost more than the request.  asyncio has
``loop.call_at`` for exactly this; trio has no such call, so each trio run gets one system task
that keeps a heap of deadlines and sleeps until the earliest live one.

Deadlines are in the clock of :func:`anyio.current_time`, so virtual clocks (``airp.testing``)
drive them like any other timer.  A callback runs on the event loop outside any task: it must be
quick, must not await, and must not raise (exceptions are the caller's to catch).
"""

from __future__ import annotations

import heapq
import math
import sys
from collections.abc import Callable
from typing import Any, Protocol

import anyio.lowlevel

__all__ = ["Timer", "call_at"]


class Timer(Protocol):
    """What :func:`call_at` returns."""

    def cancel(self) -> None:
        """Do not run the callback (harmless once it has run)."""
        ...


def call_at(when: float, callback: Callable[[], object]) -> Timer:
    """Run *callback* once the run's clock reaches *when* (now, if it already has).

    :param when: a time on :func:`anyio.current_time`'s clock.
    :param callback: a plain function, called with no arguments, outside any task.
    :returns: a handle whose ``cancel()`` stops the callback from running.
    """
    trio = sys.modules.get("trio")
    if trio is not None and trio.lowlevel.in_trio_run():
        return _trio_timers().call_at(when, callback)
    import asyncio

    return asyncio.get_running_loop().call_at(when, callback)


class _TrioTimer:
    __slots__ = ("callback", "seq", "wheel", "when")

    def __init__(self, when: float, seq: int, callback: Callable[[], object], wheel: _TrioTimerWheel) -> None:
        self.when = when
        self.seq = seq
        self.callback: Callable[[], object] | None = callback
        self.wheel = wheel

    def __lt__(self, other: _TrioTimer) -> bool:
        return (self.when, self.seq) < (other.when, other.seq)

    def cancel(self) -> None:
        if self.callback is not None:
            self.callback = None
            self.wheel._forget(self)


class _TrioTimerWheel:
    """One system task per trio run, sleeping until the earliest live deadline."""

    def __init__(self) -> None:
        import trio

        self._trio: Any = trio
        self._heap: list[_TrioTimer] = []
        self._seq = 0
        self._scope: Any = None
        trio.lowlevel.spawn_system_task(self._run, name="airp requester deadlines")

    def call_at(self, when: float, callback: Callable[[], object]) -> _TrioTimer:
        self._seq += 1
        timer = _TrioTimer(when, self._seq, callback, self)
        heapq.heappush(self._heap, timer)
        scope = self._scope
        if scope is not None and when < scope.deadline:
            scope.deadline = when
        return timer

    def _forget(self, timer: _TrioTimer) -> None:
        # Dead entries leave the heap lazily, but a dead head must not set the sleep's deadline: a
        # virtual clock would jump to it for nothing.
        heap = self._heap
        if heap and heap[0] is timer:
            while heap and heap[0].callback is None:
                heapq.heappop(heap)
            if self._scope is not None:
                self._scope.deadline = heap[0].when if heap else math.inf

    async def _run(self) -> None:
        trio = self._trio
        heap = self._heap
        while True:
            now = trio.current_time()
            while heap and (heap[0].callback is None or heap[0].when <= now):
                timer = heapq.heappop(heap)
                callback = timer.callback
                if callback is not None:
                    timer.callback = None
                    callback()
            with trio.CancelScope(deadline=heap[0].when if heap else math.inf) as scope:
                self._scope = scope
                await trio.sleep_forever()
            self._scope = None


_wheel: anyio.lowlevel.RunVar[_TrioTimerWheel] = anyio.lowlevel.RunVar("airp_trio_timers")


def _trio_timers() -> _TrioTimerWheel:
    try:
        return _wheel.get()
    except LookupError:
        wheel = _TrioTimerWheel()
        _wheel.set(wheel)
        return wheel
