"""Issue 11: the virtual clocks' promises on the faster design, on asyncio and trio."""

from __future__ import annotations

import asyncio
import time

import anyio
import anyio.to_thread
import pytest

from airp.testing import VirtualClock, virtual_anyio_backend, wait_until_quiet

#: Real seconds a worker thread works: long enough that a clock that does not wait for it jumps.
THREAD_WORK = 0.02


def _work() -> int:
    time.sleep(THREAD_WORK)  # the thread, not the test, takes real time
    return 42


@pytest.mark.anyio
async def test_a_worker_thread_in_flight_is_never_overtaken_by_a_jump(virtual_clock: VirtualClock) -> None:
    seen: list[tuple[str, float]] = []

    async def timer() -> None:
        await anyio.sleep(1)
        seen.append(("timer", virtual_clock.now()))

    async with anyio.create_task_group() as tg:
        tg.start_soon(timer)
        assert await anyio.to_thread.run_sync(_work) == 42
        seen.append(("thread", virtual_clock.now()))
    assert seen == [("thread", 0.0), ("timer", 1.0)]


def test_run_in_executor_holds_time_too() -> None:
    """asyncio's own thread API (``asyncio.to_thread``, ``getaddrinfo``), so asyncio only."""
    name, options = virtual_anyio_backend("asyncio")
    seen: list[str] = []

    async def main() -> None:
        async def timer() -> None:
            await anyio.sleep(1)
            seen.append("timer")

        async with anyio.create_task_group() as tg:
            tg.start_soon(timer)
            assert await asyncio.get_running_loop().run_in_executor(None, _work) == 42
            seen.append("thread")

    anyio.run(main, backend=name, backend_options=options)
    assert seen == ["thread", "timer"]


@pytest.mark.anyio
async def test_wait_until_quiet_does_not_move_time(virtual_clock: VirtualClock) -> None:
    async with anyio.create_task_group() as tg:
        tg.start_soon(anyio.sleep, 50)
        await wait_until_quiet()
        assert virtual_clock.now() == 0
        tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_jumps_land_exactly_on_deadlines(virtual_clock: VirtualClock) -> None:
    # Sleeping 0.1 ten times lands where ten additions of 0.1 land, to the bit (what makes the
    # M/M/1 benchmark agree with SimPy exactly).
    expected = 0.0
    for _ in range(10):
        await anyio.sleep(0.1)
        expected += 0.1
        assert anyio.current_time() == expected
