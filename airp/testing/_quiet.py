"""Waiting until the run is quiet, without moving virtual time."""

from __future__ import annotations

import asyncio

import anyio

from .._shell._asyncio_clock import VirtualTimeEventLoop
from .._shell._trio_clock import TrioVirtualClock

__all__ = ["wait_until_quiet"]


async def wait_until_quiet() -> None:
    """Wait until every other task of the run is blocked and no I/O is ready.

    Virtual time does not move: on trio this is :func:`trio.testing.wait_all_tasks_blocked`, with
    airp's trio clock held still meanwhile; on a :class:`~airp.testing.VirtualTimeEventLoop` the
    loop wakes the caller at the point where it would otherwise jump to the next timer. On a plain
    asyncio loop it falls back to :func:`anyio.wait_all_tasks_blocked` (which polls in real time).

    Use it where a test must let dispatch routines, StartIo workers and waiters run as far as they
    can before it acts (cancels, completes, closes a handle), without letting a timer fire.

    On cancellation: a checkpoint like any other; it raises the cancellation of the enclosing scope.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # not asyncio: trio
        import trio
        import trio.testing

        owner = getattr(trio.lowlevel.current_clock(), "owner", None)
        if not isinstance(owner, TrioVirtualClock):
            await trio.testing.wait_all_tasks_blocked()
            return
        owner._quiet += 1  # holds the clock still: trio then wakes idle waiters first
        try:
            await trio.testing.wait_all_tasks_blocked()
        finally:
            owner._quiet -= 1
        return
    if isinstance(loop, VirtualTimeEventLoop):
        await loop.virtual_clock.wait_idle()
    else:
        await anyio.wait_all_tasks_blocked()
