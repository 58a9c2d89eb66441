"""Custom StartIo queues (named lanes): each serial, all side by side in the device's task group;
cancellation while queued and while being started; explicit start-next; misuse; raising routines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest

import airp
from airp import (
    STATUS_CANCELLED,
    STATUS_INTERNAL_ERROR,
    STATUS_SUCCESS,
    DeviceObject,
    DeviceQueueError,
    Irp,
    IrpMajor,
    NtStatusError,
    RoutineFailure,
    StartIoQueue,
    complete_request,
)
from airp.testing import VirtualClock

pytestmark = pytest.mark.anyio


class LaneDriver(airp.Driver):
    """READ goes to the lane named by the device extension's ``route(irp)``."""

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLOSE, IrpMajor.CLEANUP)
    async def create_close(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ, IrpMajor.WRITE, IrpMajor.DEVICE_CONTROL)
    async def any_io(self, device: DeviceObject, irp: Irp) -> int:
        lane: StartIoQueue = device.extension.route(irp)
        return lane.start_packet(irp)


class Setup:
    def __init__(self) -> None:
        self.io = airp.IoManager()
        self.device = self.io.create_device(LaneDriver(), "\\Device\\Lanes")
        self.device.extension = self
        self.lanes: dict[str, StartIoQueue] = {}
        self.log: list[tuple[str, int, str, float]] = []  # lane, tag, event, time

    def route(self, irp: Irp) -> StartIoQueue:
        names: dict[int, str] = {IrpMajor.READ: "read", IrpMajor.WRITE: "write"}
        return self.lanes[names.get(irp.current_stack_location.major, "ioctl")]

    def lane(self, name: str, duration: float, **options: bool) -> StartIoQueue:
        async def routine(device: DeviceObject, irp: Irp) -> None:
            tag = getattr(irp.current_stack_location.parameters, "byte_offset", -1)
            self.log.append((name, tag, "start", anyio.current_time()))
            await anyio.sleep(duration)
            status = STATUS_CANCELLED if irp.cancel else STATUS_SUCCESS
            self.log.append((name, tag, "done", anyio.current_time()))
            complete_request(irp, status, 0)

        lane = self.lanes[name] = StartIoQueue(self.device, name, routine, **options)
        return lane

    def times(self, lane: str, event: str = "done") -> list[float]:
        return [t for name, _, ev, t in self.log if name == lane and ev == event]


async def test_three_lanes_each_serial_all_side_by_side(virtual_clock: VirtualClock) -> None:
    s = Setup()
    s.lane("read", 1)
    s.lane("write", 2)
    s.lane("ioctl", 5)
    async with airp.run_device(s.device) as tasks, s.io.open("\\Device\\Lanes") as handle:
        requests: list[airp.Overlapped[Any]] = []
        for n in range(4):
            requests.append(await handle.read_overlapped(0, offset=n))
            requests.append(await handle.write_overlapped(b"", offset=n))
        requests.append(await handle.device_control_overlapped(0x222000))
        assert tasks.workers == 3
        for r in requests:
            await r
    assert s.times("read") == [pytest.approx(t) for t in (1, 2, 3, 4)]
    assert s.times("write") == [pytest.approx(t) for t in (2, 4, 6, 8)]
    assert s.times("ioctl") == [pytest.approx(5)]
    assert virtual_clock.now() == pytest.approx(8)


async def test_cancelled_while_queued_leaves_its_lane(virtual_clock: VirtualClock) -> None:
    s = Setup()
    read = s.lane("read", 3)
    async with airp.run_device(s.device), s.io.open("\\Device\\Lanes") as handle:
        requests = [await handle.read_overlapped(0, offset=n) for n in range(4)]
        assert list(read.queue) == [r.irp for r in requests[1:]]
        assert airp.cancel_irp(requests[2].irp) is True
        assert requests[2].irp.status == STATUS_CANCELLED  # completed at once, never started
        assert list(read.queue) == [requests[1].irp, requests[3].irp]
        with pytest.raises(NtStatusError) as caught:
            await requests[2]
        assert caught.value.status == STATUS_CANCELLED
        for n in (0, 1, 3):
            await requests[n]
    # The cancelled IRP took no device time: the others finish at 3, 6, 9.
    assert [(tag, t) for _, tag, ev, t in s.log if ev == "done"] == [(0, 3.0), (1, 6.0), (3, 9.0)]


async def test_cancelled_while_being_started_is_the_routines_to_finish(virtual_clock: VirtualClock) -> None:
    s = Setup()
    s.lane("read", 3)
    async with airp.run_device(s.device), s.io.open("\\Device\\Lanes") as handle:
        first = await handle.read_overlapped(0, offset=0)
        await anyio.sleep(1)
        assert first.irp.cancel_routine is None  # disarmed when it was started
        assert airp.cancel_irp(first.irp) is False  # no routine to call: only the flag is set
        assert not first.done
        with pytest.raises(NtStatusError) as caught:
            await first
        assert caught.value.status == STATUS_CANCELLED  # the routine noticed irp.cancel
    assert virtual_clock.now() == pytest.approx(3)


async def test_routine_may_ignore_cancellation(virtual_clock: VirtualClock) -> None:
    s = Setup()

    async def stubborn(device: DeviceObject, irp: Irp) -> None:
        await anyio.sleep(2)
        complete_request(irp, STATUS_SUCCESS, 0)

    s.lanes["read"] = StartIoQueue(s.device, "read", stubborn)
    async with airp.run_device(s.device), s.io.open("\\Device\\Lanes") as handle:
        first = await handle.read_overlapped(0)
        await anyio.sleep(1)
        airp.cancel_irp(first.irp)
        assert await first == b""  # cancel is advisory (reference 6.1)
        assert first.irp.status == STATUS_SUCCESS


async def test_requester_timeout_on_a_queued_irp(virtual_clock: VirtualClock) -> None:
    s = Setup()
    s.lane("read", 10)
    async with airp.run_device(s.device), s.io.open("\\Device\\Lanes") as handle:
        first = await handle.read_overlapped(0, offset=0)
        with anyio.move_on_after(4) as scope:
            await handle.read(0, offset=1)
        assert scope.cancelled_caught
        assert anyio.current_time() == pytest.approx(4)  # the queued IRP came back at once
        await first
    assert [tag for _, tag, ev, _ in s.log if ev == "start"] == [0]


async def test_explicit_start_next_from_an_interrupt_task(virtual_clock: VirtualClock) -> None:
    s = Setup()
    in_flight: list[Irp] = []
    started = anyio.Event()

    async def start_io(device: DeviceObject, irp: Irp) -> None:
        s.log.append(("read", irp.current_stack_location.parameters.byte_offset, "start", anyio.current_time()))
        in_flight.append(irp)
        started.set()

    lane = s.lanes["read"] = StartIoQueue(s.device, "read", start_io, start_next_on_return=False)

    async def interrupt() -> None:
        nonlocal started
        for _ in range(3):
            await started.wait()
            started = anyio.Event()
            await anyio.sleep(2)
            complete_request(in_flight.pop(), STATUS_SUCCESS, 0)
            lane.start_next_packet()

    async with airp.run_device(s.device), s.io.open("\\Device\\Lanes") as handle, anyio.create_task_group() as tg:
        tg.start_soon(interrupt)
        requests = [await handle.read_overlapped(0, offset=n) for n in range(3)]
        for r in requests:
            await r
    assert s.times("read", "start") == [0.0, pytest.approx(2.0), pytest.approx(4.0)]
    assert lane.current_irp is None
    assert not lane.queue.busy


async def test_routine_that_starts_the_next_itself_is_not_started_twice(virtual_clock: VirtualClock) -> None:
    s = Setup()
    holder: list[StartIoQueue] = []

    async def start_io(device: DeviceObject, irp: Irp) -> None:
        s.log.append(("read", irp.current_stack_location.parameters.byte_offset, "start", anyio.current_time()))
        complete_request(irp, STATUS_SUCCESS, 0)
        holder[0].start_next_packet()  # as a Windows custom StartIo loop would
        await anyio.sleep(1)

    holder.append(StartIoQueue(s.device, "read", start_io))
    s.lanes["read"] = holder[0]
    async with airp.run_device(s.device), s.io.open("\\Device\\Lanes") as handle:
        requests = [await handle.read_overlapped(0, offset=n) for n in range(4)]
        for r in requests:
            await r
    assert [tag for _, tag, ev, _ in s.log if ev == "start"] == [0, 1, 2, 3]
    assert holder[0].started == 4


async def test_keyed_lane(virtual_clock: VirtualClock) -> None:
    s = Setup()
    lane = s.lane("read", 1)

    class Keyed(LaneDriver):
        @airp.dispatch(IrpMajor.READ)
        async def any_io(self, device: DeviceObject, irp: Irp) -> int:
            return lane.start_packet(irp, key=irp.current_stack_location.parameters.byte_offset)

    s.device.driver.major_function[IrpMajor.READ] = Keyed().any_io
    async with airp.run_device(s.device), s.io.open("\\Device\\Lanes") as handle:
        requests = [await handle.read_overlapped(0, offset=n) for n in (5, 9, 1, 7, 3)]
        for r in requests:
            await r
    assert [tag for _, tag, ev, _ in s.log if ev == "start"] == [5, 1, 3, 7, 9]


async def test_lane_declared_while_the_device_runs(virtual_clock: VirtualClock) -> None:
    s = Setup()
    async with airp.run_device(s.device) as tasks, s.io.open("\\Device\\Lanes") as handle:
        assert tasks.workers == 0
        s.lane("read", 1)
        assert tasks.workers == 1
        assert await handle.read(0) == b""


# -- misuse ---------------------------------------------------------------------------------------


def test_lane_names_are_unique() -> None:
    s = Setup()
    s.lane("read", 1)
    with pytest.raises(ValueError, match="already has a StartIo queue named 'read'"):
        s.lane("read", 1)


@pytest.mark.parametrize("name", ["", None, 3])
def test_lane_needs_a_name(name: object) -> None:
    async def routine(device: DeviceObject, irp: Irp) -> None:
        pass

    with pytest.raises(TypeError, match="name"):
        StartIoQueue(Setup().device, name, routine)  # type: ignore[arg-type]


@pytest.mark.parametrize("routine", [lambda device, irp: None, None])
def test_lane_routine_must_be_a_coroutine_function(routine: Callable[..., object] | None) -> None:
    with pytest.raises(TypeError, match="async def"):
        StartIoQueue(Setup().device, "read", routine)  # type: ignore[arg-type]


async def test_start_next_on_an_idle_lane_is_an_error() -> None:
    s = Setup()
    lane = s.lane("read", 1)
    async with airp.run_device(s.device):
        with pytest.raises(DeviceQueueError, match="idle"):
            lane.start_next_packet()


async def test_custom_cancel_routine_on_a_lane(virtual_clock: VirtualClock) -> None:
    s = Setup()
    lane = s.lane("read", 2)
    seen: list[Irp] = []

    def cancel(device: DeviceObject | None, irp: Irp) -> None:
        seen.append(irp)
        if lane.queue.remove_entry(irp):
            complete_request(irp, STATUS_CANCELLED, 0)

    class Custom(LaneDriver):
        @airp.dispatch(IrpMajor.READ)
        async def any_io(self, device: DeviceObject, irp: Irp) -> int:
            return lane.start_packet(irp, cancel_routine=cancel)

    s.device.driver.major_function[IrpMajor.READ] = Custom().any_io
    async with airp.run_device(s.device), s.io.open("\\Device\\Lanes") as handle:
        first = await handle.read_overlapped(0, offset=0)
        second = await handle.read_overlapped(0, offset=1)
        airp.cancel_irp(second.irp)
        assert seen == [second.irp]
        assert second.irp.status == STATUS_CANCELLED
        await first


# -- raising routines ------------------------------------------------------------------------------


async def test_raising_lane_routine_fails_its_irp_and_goes_on(virtual_clock: VirtualClock) -> None:
    s = Setup()
    failures: list[RoutineFailure] = []

    async def flaky(device: DeviceObject, irp: Irp) -> None:
        tag = irp.current_stack_location.parameters.byte_offset
        await anyio.sleep(1)
        if tag % 2:
            raise RuntimeError(f"odd tag {tag}")
        complete_request(irp, STATUS_SUCCESS, 0)

    s.lanes["read"] = StartIoQueue(s.device, "read", flaky)
    async with airp.run_device(s.device, on_error=failures.append), s.io.open("\\Device\\Lanes") as handle:
        requests = [await handle.read_overlapped(0, offset=n) for n in range(4)]
        for r in requests:
            await r.irp
    assert [r.irp.status for r in requests] == [STATUS_SUCCESS, STATUS_INTERNAL_ERROR] * 2
    assert [(f.queue, f.irp, str(f.error)) for f in failures] == [
        ("read", requests[1].irp, "odd tag 1"),
        ("read", requests[3].irp, "odd tag 3"),
    ]
    assert virtual_clock.now() == pytest.approx(4)


async def test_raising_routine_with_an_armed_cancel_routine(virtual_clock: VirtualClock) -> None:
    # The routine armed its own cancel routine and then raised: airp disarms it before completing.
    s = Setup()
    failures: list[RoutineFailure] = []

    async def armed(device: DeviceObject, irp: Irp) -> None:
        irp.set_cancel_routine(lambda device, irp: None)
        raise OSError("lost the device")

    s.lanes["read"] = StartIoQueue(s.device, "read", armed)
    async with airp.run_device(s.device, on_error=failures.append), s.io.open("\\Device\\Lanes") as handle:
        with pytest.raises(NtStatusError) as caught:
            await handle.read(0)
    assert caught.value.status == STATUS_INTERNAL_ERROR
    assert len(failures) == 1
