"""``airp.delay``: the sleep the run's clock owns.

It wakes at exactly now + seconds of virtual time, ``0`` is a checkpoint, bad input is refused
with a message naming ``delay``, a cancellation ends it at once and leaves nothing in the clock,
and on real time (no airp clock) it is an ordinary sleep.  ``airp.wait_or_cancelled``, which
sleeps on the same heap, is woken by a cancel and runs out its time otherwise.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc
import pytest

import airp
from airp import STATUS_CANCELLED, STATUS_SUCCESS, DeviceObject, Irp, IrpMajor, StartIoQueue, complete_request
from airp.testing import AsyncioVirtualClock, TrioVirtualClock, VirtualClock

pytestmark = pytest.mark.anyio

#: Real seconds a run may take before the guard calls it a hang.
HANG_GUARD = 30.0


# -- when it wakes ------------------------------------------------------------------------------------


async def test_delay_wakes_at_exactly_now_plus_seconds(virtual_clock: VirtualClock) -> None:
    seen = []
    await airp.delay(1.5)
    seen.append(anyio.current_time())
    await airp.delay(3)  # an int
    seen.append(anyio.current_time())
    await anyio.sleep(0.25)
    await airp.delay(0.25)
    seen.append(anyio.current_time())
    await airp.delay(86_400 * 365)
    seen.append(anyio.current_time())
    assert seen == [1.5, 4.5, 5.0, 5.0 + 86_400 * 365]
    assert virtual_clock.now() == 5.0 + 86_400 * 365


async def test_delays_in_parallel_end_at_their_own_times(virtual_clock: VirtualClock) -> None:
    woke: list[tuple[float, float]] = []

    async def sleeper(seconds: float) -> None:
        await airp.delay(seconds)
        woke.append((seconds, anyio.current_time()))

    async with anyio.create_task_group() as tg:
        for seconds in (7, 0.5, 3, 1e6, 2.25):
            tg.start_soon(sleeper, seconds)
    assert sorted(woke) == [(0.5, 0.5), (2.25, 2.25), (3, 3.0), (7, 7.0), (1e6, 1e6)]
    assert [t for _, t in woke] == sorted(t for _, t in woke)  # in time order
    assert virtual_clock.now() == 1e6


async def test_delay_zero_is_a_checkpoint_that_does_not_move_time(virtual_clock: VirtualClock) -> None:
    ran: list[str] = []

    async def other() -> None:
        ran.append("other")

    async with anyio.create_task_group() as tg:
        tg.start_soon(other)
        for _ in range(10):  # trio may run a batch in either order: a few checkpoints at most
            if ran:
                break
            await airp.delay(0)
        assert ran == ["other"]  # delay(0) let the other task run
        await airp.delay(0.0)
    assert virtual_clock.now() == 0.0


async def test_delay_in_a_cancelled_scope_ends_at_once(virtual_clock: VirtualClock) -> None:
    with anyio.CancelScope() as scope:
        scope.cancel()
        await airp.delay(10)
    assert scope.cancelled_caught
    assert virtual_clock.now() == 0.0


# -- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", ["1", None, True, False, b"1", [1]])
async def test_delay_refuses_what_is_not_a_number(virtual_clock: VirtualClock, seconds: Any) -> None:
    with pytest.raises(TypeError, match=r"^delay must be a number of seconds") as caught:
        await airp.delay(seconds)
    assert repr(seconds) in str(caught.value)
    assert virtual_clock.now() == 0.0


@pytest.mark.parametrize("seconds", [-1, -0.5, math.nan, -math.inf])
async def test_delay_refuses_negative_and_nan(virtual_clock: VirtualClock, seconds: float) -> None:
    with pytest.raises(ValueError, match=r"^delay must be >= 0") as caught:
        await airp.delay(seconds)
    assert repr(seconds) in str(caught.value)
    assert virtual_clock.now() == 0.0


# -- cancellation ------------------------------------------------------------------------------------


async def test_move_on_after_ends_a_delay_at_its_deadline(virtual_clock: VirtualClock) -> None:
    with anyio.move_on_after(1) as scope:
        await airp.delay(10)
    assert scope.cancelled_caught
    assert virtual_clock.now() == 1.0
    with anyio.move_on_after(2.5) as forever:
        await airp.delay(math.inf)
    assert forever.cancelled_caught
    assert virtual_clock.now() == 3.5


async def test_fail_after_ends_a_delay_with_timeout_error(virtual_clock: VirtualClock) -> None:
    with pytest.raises(TimeoutError), anyio.fail_after(4):
        await airp.delay(5)
    assert virtual_clock.now() == 4.0


async def test_cancelling_a_task_group_cancels_its_delayed_tasks(virtual_clock: VirtualClock) -> None:
    outcomes: list[tuple[str, float]] = []

    async def sleeper(seconds: float) -> None:
        try:
            await airp.delay(seconds)
        except anyio.get_cancelled_exc_class():
            outcomes.append(("cancelled", anyio.current_time()))
            raise
        outcomes.append(("woke", anyio.current_time()))

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper, 1)
        tg.start_soon(sleeper, 100)
        tg.start_soon(sleeper, math.inf)
        await airp.delay(2)
        tg.cancel_scope.cancel()
    assert outcomes == [("woke", 1.0), ("cancelled", 2.0), ("cancelled", 2.0)]
    assert virtual_clock.now() == 2.0


def _live_timers(clock: AsyncioVirtualClock | TrioVirtualClock) -> list[object]:
    """The timers and parked tasks still waiting in the run's clock."""
    if isinstance(clock, TrioVirtualClock):
        return [sleeper for _, _, sleeper in clock._jump_clock.sleepers if sleeper.task is not None]
    loop = asyncio.get_running_loop()
    return [
        timer
        for _, _, timer in loop._timers  # type: ignore[attr-defined]
        if not (timer.cancelled() if isinstance(timer, asyncio.TimerHandle) else timer.done())
    ]


async def test_a_cancelled_sleeper_leaves_nothing_that_fires_later(
    virtual_clock: AsyncioVirtualClock | TrioVirtualClock,
) -> None:
    """A sleeper cancelled at t=1 of a 10 s delay then waits on an Event set at t=20: nothing from
    its old sleep wakes it at t=10 (a spurious wake-up would end its wait early or break it)."""
    released = anyio.Event()
    seen: list[tuple[str, float]] = []

    async def sleeper() -> None:
        with anyio.move_on_after(1):
            await airp.delay(10)
        seen.append(("cancelled", anyio.current_time()))
        await released.wait()
        seen.append(("released", anyio.current_time()))

    async def crowd(n: int) -> None:
        with anyio.move_on_after(1):  # many at once: the heap drops what was cancelled
            await airp.delay(10 + n)

    async with anyio.create_task_group() as tg:
        tg.start_soon(sleeper)
        for n in range(200):
            tg.start_soon(crowd, n)
        await anyio.sleep(20)
        assert seen == [("cancelled", 1.0)]
        assert _live_timers(virtual_clock) == []
        released.set()
    assert seen == [("cancelled", 1.0), ("released", 20.0)]
    await airp.delay(500)  # past every cancelled sleeper's old time: nothing fires
    assert virtual_clock.now() == 520.0
    assert _live_timers(virtual_clock) == []


# -- on real time --------------------------------------------------------------------------------------


def _run_real_time(backend: str, main: Callable[[], Awaitable[Any]]) -> Any:
    """``anyio.run(main, backend=backend)`` with no airp clock, under a hang guard (a daemon thread
    joined with a timeout)."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = anyio.run(main, backend=backend)
        except BaseException as error:  # handed to the test's thread
            outcome["error"] = error

    thread = threading.Thread(target=target, name=f"real-time {backend} run", daemon=True)
    thread.start()
    thread.join(HANG_GUARD)
    if thread.is_alive():
        pytest.fail(f"the real-time {backend} run was still going after {HANG_GUARD} s: it hangs", pytrace=False)
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_delay_on_real_time_is_an_ordinary_sleep(backend: str) -> None:
    async def main() -> dict[str, object]:
        from airp._shell._run_clock import current_virtual_clock

        facts: dict[str, object] = {"clock": current_virtual_clock()}
        if backend == "asyncio":
            facts["loop"] = type(asyncio.get_running_loop()).__name__
        await airp.delay(0.001)  # a real sleep of 1 ms (its duration is not checked)
        await airp.delay(0)  # an int: a checkpoint
        with anyio.CancelScope() as scope:
            scope.cancel()
            await airp.delay(10)  # cancelled before it starts: returns at once
        facts["cancelled_caught"] = scope.cancelled_caught
        with pytest.raises(ValueError, match=r"^delay"):
            await airp.delay(-1)
        facts["done"] = True
        return facts

    facts = _run_real_time(backend, main)
    assert facts["clock"] is None
    if backend == "asyncio":
        assert facts["loop"] != "VirtualTimeEventLoop"
    assert facts["cancelled_caught"] is True
    assert facts["done"] is True


# -- wait_or_cancelled on a StartIo lane ---------------------------------------------------------------


class WaitingLane(airp.Driver):
    """READ goes to a StartIo lane whose routine waits 10 s with ``wait_or_cancelled``."""

    def __init__(self) -> None:
        super().__init__("waiting lane")
        self.log: list[tuple[str, object, float]] = []

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLOSE, IrpMajor.CLEANUP)
    async def create_close(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        return device.extension.start_packet(irp)  # type: ignore[no-any-return]

    async def routine(self, device: DeviceObject, irp: Irp) -> None:
        self.log.append(("start", None, anyio.current_time()))
        try:
            cancelled = await airp.wait_or_cancelled(irp, 10)
        except BaseException as error:  # must not happen: the wait is woken, not cancelled
            self.log.append(("raised", type(error).__name__, anyio.current_time()))
            raise
        self.log.append(("resumed", cancelled, anyio.current_time()))
        complete_request(irp, STATUS_CANCELLED if cancelled else STATUS_SUCCESS, 0)


def _lane_device() -> tuple[airp.IoManager, DeviceObject, WaitingLane]:
    io = airp.IoManager()
    driver = WaitingLane()
    device = io.create_device(driver, "\\Device\\Waiting")
    device.extension = StartIoQueue(device, "reads", driver.routine)
    return io, device, driver


async def test_wait_or_cancelled_on_a_lane_wakes_when_the_irp_is_cancelled(virtual_clock: VirtualClock) -> None:
    io, device, driver = _lane_device()
    async with airp.run_device(device), io.open("\\Device\\Waiting") as handle:
        read = await handle.read_overlapped(4)
        await anyio.sleep(3)
        assert read.irp.cancel_routine is not None  # armed by the wait
        assert airp.cancel_irp(read.irp)
        with pytest.raises(airp.NtStatusError) as caught:
            await read
        assert caught.value.status == STATUS_CANCELLED
        assert read.irp.cancel_routine is None
    assert driver.log == [("start", None, 0.0), ("resumed", True, 3.0)]  # at t=3, without an exception
    assert virtual_clock.now() == 3.0


async def test_wait_or_cancelled_on_a_lane_runs_out_its_time(virtual_clock: VirtualClock) -> None:
    io, device, driver = _lane_device()
    async with airp.run_device(device), io.open("\\Device\\Waiting") as handle:
        first = await handle.read_overlapped(4)
        second = await handle.read_overlapped(4)
        await anyio.sleep(12)
        assert airp.cancel_irp(second.irp)  # 2 s into the second IRP's wait
        await first
        with pytest.raises(airp.NtStatusError):
            await second
    assert driver.log == [
        ("start", None, 0.0),
        ("resumed", False, 10.0),
        ("start", None, 10.0),
        ("resumed", True, 12.0),
    ]
    assert first.irp.status == STATUS_SUCCESS
    assert second.irp.status == STATUS_CANCELLED


async def test_delay_zero_in_a_cancelled_scope_is_a_cancellation_point(virtual_clock: VirtualClock) -> None:
    reached = []
    with anyio.CancelScope() as scope:
        scope.cancel()
        await airp.delay(0)
        reached.append("past delay(0)")
    assert reached == []
    assert scope.cancelled_caught


async def test_a_task_looping_on_delay_zero_is_cancelled_by_its_task_group(virtual_clock: VirtualClock) -> None:
    turns = 0
    outcome: list[str] = []

    async def spinner() -> None:
        nonlocal turns
        try:
            while turns < 10_000:
                await airp.delay(0)
                turns += 1
        except anyio.get_cancelled_exc_class():
            outcome.append("cancelled")
            raise
        outcome.append("never cancelled")

    async def canceller(tg: anyio.abc.TaskGroup) -> None:
        await airp.delay(0)
        tg.cancel_scope.cancel()

    async with anyio.create_task_group() as tg:
        tg.start_soon(canceller, tg)
        tg.start_soon(spinner)
    assert outcome == ["cancelled"]
    assert turns <= 2
    assert virtual_clock.now() == 0.0


@pytest.mark.parametrize("sleep", [anyio.sleep, airp.delay], ids=["anyio.sleep", "airp.delay"])
async def test_a_deadline_and_a_sleep_due_at_the_same_instant_cancel_the_sleep(
    virtual_clock: VirtualClock, sleep: Callable[[float], Awaitable[None]]
) -> None:
    # The scope's deadline was set first, so it fires first: the sleeper is cancelled, not woken.
    after: list[float] = []
    with anyio.move_on_after(5) as scope:
        await sleep(5)
        after.append(virtual_clock.now())
    assert scope.cancelled_caught
    assert after == []
    assert virtual_clock.now() == 5.0
