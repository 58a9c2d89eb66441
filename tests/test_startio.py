"""System StartIo (reference 7.2 to 7.5): start_packet, start_next_packet (by key), the deferred and
non-cancelable attributes, cancel routines, misuse, and a StartIo routine that raises."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest

import airp
from airp import (
    STATUS_CANCELLED,
    STATUS_INTERNAL_ERROR,
    STATUS_PENDING,
    STATUS_SUCCESS,
    DeviceObject,
    DeviceQueueError,
    DeviceRoutineError,
    Irp,
    IrpMajor,
    NtStatusError,
    RoutineFailure,
    complete_request,
    device_queue,
    device_tasks,
    start_next_packet,
)
from airp.testing import VirtualClock, wait_until_quiet

pytestmark = pytest.mark.anyio


class StartIoDriver(airp.Driver):
    """A device that serialises reads through the system StartIo queue.

    The read's offset is its tag (and its sort key when ``keyed``).  ``start_io`` records when it
    starts and finishes each IRP and completes it after ``duration`` seconds of device time, then
    calls start_next_packet (unless ``call_start_next`` is off).
    """

    def __init__(self, *, duration: float = 1.0, keyed: bool = False, cancel_routine: Any = None) -> None:
        super().__init__("serial")
        self.duration = duration
        self.keyed = keyed
        self.cancel_routine = cancel_routine
        self.call_start_next = True
        self.cancelable = cancel_routine is not None
        self.log: list[tuple[str, int, float]] = []
        self.seen_cancel_routine: list[object] = []

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLOSE, IrpMajor.CLEANUP)
    async def create_close(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        irp.mark_pending()  # as Windows requires before IoStartPacket (start_packet does it too)
        offset = irp.current_stack_location.parameters.byte_offset
        airp.start_packet(device, irp, key=offset if self.keyed else None, cancel_routine=self.cancel_routine)
        return STATUS_PENDING

    async def start_io(self, device: DeviceObject, irp: Irp) -> None:
        assert device.current_irp is irp
        tag = irp.current_stack_location.parameters.byte_offset
        self.seen_cancel_routine.append(irp.cancel_routine)
        self.log.append(("start", tag, anyio.current_time()))
        await anyio.sleep(self.duration)
        # Reference 7.5: StartIo disarms the cancel routine before finishing; if it had been
        # taken, the routine saw the IRP was current and left it to us.
        irp.set_cancel_routine(None)
        status = STATUS_CANCELLED if irp.cancel else STATUS_SUCCESS
        self.log.append(("done", tag, anyio.current_time()))
        complete_request(irp, status, 0)
        if self.call_start_next:
            start_next_packet(device, self.cancelable)


def make(driver: StartIoDriver) -> tuple[airp.IoManager, DeviceObject]:
    io = airp.IoManager()
    return io, io.create_device(driver, "\\Device\\Serial")


def starts(driver: StartIoDriver) -> list[object]:
    """(tag, time) of every StartIo call, in order."""
    return [(tag, t) for event, tag, t in driver.log if event == "start"]


async def test_packets_run_one_at_a_time_in_arrival_order(virtual_clock: VirtualClock) -> None:
    driver = StartIoDriver()
    io, device = make(driver)
    async with airp.run_device(device) as tasks, io.open("\\Device\\Serial") as handle:
        requests = [await handle.read_overlapped(0, offset=n) for n in range(5)]
        assert all(r.status_returned == STATUS_PENDING for r in requests)
        # The first went straight to StartIo (the device was idle); four wait in the device queue.
        assert device.current_irp is requests[0].irp
        assert len(device_queue(device)) == 4
        assert device_queue(device).busy
        for r in requests:
            await r
        assert tasks.workers == 1  # one worker for the queue, not one task per IRP
    assert starts(driver) == [(n, pytest.approx(float(n))) for n in range(5)]
    assert device.current_irp is None
    assert not device_queue(device).busy


async def test_without_start_next_the_device_stays_busy(virtual_clock: VirtualClock) -> None:
    driver = StartIoDriver()
    driver.call_start_next = False
    io, device = make(driver)
    async with airp.run_device(device), io.open("\\Device\\Serial") as handle:
        first = await handle.read_overlapped(0, offset=1)
        second = await handle.read_overlapped(0, offset=2)
        await first
        await anyio.sleep(10)
        await wait_until_quiet()
        assert not second.done  # nobody started the next packet
        assert starts(driver) == [(1, 0.0)]
        assert device.current_irp is first.irp  # CurrentIrp is cleared by start-next, not completion
        start_next_packet(device)  # IoStartNextPacket, from outside StartIo (a DPC, say)
        assert device.current_irp is second.irp
        await second
    assert starts(driver)[1] == (2, pytest.approx(11.0))


async def test_next_packet_starts_when_the_current_one_is_completed(virtual_clock: VirtualClock) -> None:
    # StartIo only starts the "hardware" and returns; an interrupt task completes the IRP later and
    # calls complete_and_start_next.  The next StartIo begins only then.
    class InterruptDriver(StartIoDriver):
        async def start_io(self, device: DeviceObject, irp: Irp) -> None:
            self.log.append(("start", irp.current_stack_location.parameters.byte_offset, anyio.current_time()))
            pending.append(irp)
            hardware.set()

    driver = InterruptDriver()
    io, device = make(driver)
    pending: list[Irp] = []
    hardware = anyio.Event()

    async def interrupt() -> None:
        nonlocal hardware
        for _ in range(3):
            await hardware.wait()
            hardware = anyio.Event()
            await anyio.sleep(2)
            airp.complete_and_start_next(device, pending.pop(), STATUS_SUCCESS, 0)

    async with airp.run_device(device), io.open("\\Device\\Serial") as handle, anyio.create_task_group() as tg:
        tg.start_soon(interrupt)
        requests = [await handle.read_overlapped(0, offset=n) for n in range(3)]
        for r in requests:
            await r
    assert starts(driver) == [(0, 0.0), (1, pytest.approx(2.0)), (2, pytest.approx(4.0))]


async def test_start_packet_by_key_and_start_next_by_key(virtual_clock: VirtualClock) -> None:
    class Elevator(StartIoDriver):
        async def start_io(self, device: DeviceObject, irp: Irp) -> None:
            key = irp.current_stack_location.parameters.byte_offset
            self.log.append(("start", key, anyio.current_time()))
            await anyio.sleep(1)
            complete_request(irp, STATUS_SUCCESS, 0)
            airp.start_next_packet_by_key(device, key + 1)  # the next sector upwards, wrapping around

    driver = Elevator(keyed=True)
    io, device = make(driver)
    async with airp.run_device(device), io.open("\\Device\\Serial") as handle:
        requests = [await handle.read_overlapped(0, offset=n) for n in (50, 70, 10, 60, 30, 90, 20)]
        assert [device_queue(device).sort_key(irp) for irp in device_queue(device)] == [10, 20, 30, 60, 70, 90]
        for r in requests:
            await r
    # 50 first (idle device), then upwards from 51, then wrap around to the lowest.
    assert [tag for event, tag, _ in driver.log if event == "start"] == [50, 60, 70, 90, 10, 20, 30]


async def test_stock_cancel_routine_removes_queued_irp(virtual_clock: VirtualClock) -> None:
    driver = StartIoDriver(duration=5, cancel_routine=airp.start_io_cancel_routine)
    io, device = make(driver)
    async with airp.run_device(device), io.open("\\Device\\Serial") as handle:
        first = await handle.read_overlapped(0, offset=1)
        second = await handle.read_overlapped(0, offset=2)
        third = await handle.read_overlapped(0, offset=3)
        assert airp.cancel_irp(second.irp) is True
        # Still queued: removed from the device queue and completed as cancelled at once.
        assert second.done
        assert second.irp.status == STATUS_CANCELLED
        assert second.irp not in device_queue(device)
        with pytest.raises(NtStatusError):
            await second
        await first
        await third
    assert starts(driver) == [(1, 0.0), (3, pytest.approx(5.0))]
    assert third.irp.status == STATUS_SUCCESS


async def test_cancelling_the_current_irp_leaves_it_to_start_io(virtual_clock: VirtualClock) -> None:
    driver = StartIoDriver(duration=5, cancel_routine=airp.start_io_cancel_routine)
    io, device = make(driver)
    async with airp.run_device(device), io.open("\\Device\\Serial") as handle:
        first = await handle.read_overlapped(0, offset=1)
        await anyio.sleep(1)
        # Started packets lose their cancel routine before StartIo sees them (issue 10 item 9).
        assert first.irp.cancel_routine is None
        assert airp.cancel_irp(first.irp) is False  # no routine to call: only the flag is set
        assert not first.done
        await anyio.lowlevel.checkpoint()
        assert first.irp.cancel
        with pytest.raises(NtStatusError) as caught:
            await first
        assert caught.value.status == STATUS_CANCELLED
    assert virtual_clock.now() == pytest.approx(5.0)  # StartIo finished it in its own time


async def test_requester_cancellation_of_a_queued_irp(virtual_clock: VirtualClock) -> None:
    driver = StartIoDriver(duration=5, cancel_routine=airp.start_io_cancel_routine)
    io, device = make(driver)
    async with airp.run_device(device), io.open("\\Device\\Serial") as handle:
        first = await handle.read_overlapped(0, offset=1)
        with anyio.move_on_after(2) as scope:
            await handle.read(0, offset=2)  # waits behind the first; cancelled at t=2
        assert scope.cancelled_caught
        assert anyio.current_time() == pytest.approx(2.0)  # the queued IRP came back at once
        await first
    assert starts(driver) == [(1, 0.0)]


async def test_already_cancelled_irp_is_cancelled_when_queued(virtual_clock: VirtualClock) -> None:
    # Reference 7.2 step 5: inserted and Irp->Cancel already set -> the cancel routine runs at once.
    cancelled: list[Irp] = []

    def cancel(device: DeviceObject | None, irp: Irp) -> None:
        cancelled.append(irp)
        airp.start_io_cancel_routine(device, irp)

    class PreCancel(StartIoDriver):
        @airp.dispatch(IrpMajor.READ)
        async def read(self, device: DeviceObject, irp: Irp) -> int:
            if irp.current_stack_location.parameters.byte_offset == 2:
                airp.cancel_irp(irp)  # no cancel routine yet: only the flag is set
            return airp.start_packet(device, irp, cancel_routine=cancel)

    driver = PreCancel(duration=1, cancel_routine=cancel)
    io, device = make(driver)
    async with airp.run_device(device), io.open("\\Device\\Serial") as handle:
        first = await handle.read_overlapped(0, offset=1)
        second = await handle.read_overlapped(0, offset=2)
        assert cancelled == [second.irp]
        assert second.irp.status == STATUS_CANCELLED
        await first


async def test_non_cancelable_attribute_disarms_before_start_io(virtual_clock: VirtualClock) -> None:
    driver = StartIoDriver(duration=1, cancel_routine=airp.start_io_cancel_routine)
    io, device = make(driver)
    airp.set_start_io_attributes(device, non_cancelable=True)
    async with airp.run_device(device), io.open("\\Device\\Serial") as handle:
        requests = [await handle.read_overlapped(0, offset=n) for n in range(3)]
        # Queued IRPs keep their cancel routine while they wait ...
        assert all(r.irp.cancel_routine is airp.start_io_cancel_routine for r in requests[1:])
        for r in requests:
            await r
    # ... and StartIo never sees one: not for the first (started on an idle device), not for the
    # others (taken out by a cancelable start_next_packet).
    assert driver.seen_cancel_routine == [None, None, None]


async def test_without_non_cancelable_start_io_sees_the_routine(virtual_clock: VirtualClock) -> None:
    driver = StartIoDriver(duration=1, cancel_routine=airp.start_io_cancel_routine)
    io, device = make(driver)
    airp.set_start_io_attributes(device, non_cancelable=False)  # the Windows default, asked for
    async with airp.run_device(device), io.open("\\Device\\Serial") as handle:
        requests = [await handle.read_overlapped(0, offset=n) for n in range(2)]
        for r in requests:
            await r
    assert driver.seen_cancel_routine == [airp.start_io_cancel_routine] * 2


@pytest.mark.parametrize("deferred", [False, True])
async def test_deferred_start_io_takes_the_next_packet_after_start_io_returns(
    virtual_clock: VirtualClock, deferred: bool
) -> None:
    observed: list[object] = []

    class Nested(StartIoDriver):
        async def start_io(self, device: DeviceObject, irp: Irp) -> None:
            tag = irp.current_stack_location.parameters.byte_offset
            self.log.append(("start", tag, anyio.current_time()))
            complete_request(irp, STATUS_SUCCESS, 0)
            start_next_packet(device)
            start_next_packet(device) if deferred else None  # collapses into one when deferred
            observed.append(device.current_irp)
            await anyio.sleep(1)

    driver = Nested()
    io, device = make(driver)
    if deferred:
        airp.set_start_io_attributes(device, deferred=True)
    async with airp.run_device(device), io.open("\\Device\\Serial") as handle:
        requests = [await handle.read_overlapped(0, offset=n) for n in range(3)]
        for r in requests:
            await r
    if deferred:
        # The start-next was only recorded: CurrentIrp was still the IRP StartIo had.
        assert observed == [r.irp for r in requests]
    else:
        # The next IRP was taken out at the call (StartIo itself still waits its turn).
        assert observed == [requests[1].irp, requests[2].irp, None]
    # Either way StartIo is never re-entered: one call after the other.
    assert starts(driver) == [(0, 0.0), (1, pytest.approx(1.0)), (2, pytest.approx(2.0))]


async def test_complete_and_start_next(virtual_clock: VirtualClock) -> None:
    class Helper(StartIoDriver):
        async def start_io(self, device: DeviceObject, irp: Irp) -> None:
            await anyio.sleep(1)
            airp.complete_and_start_next(device, irp, STATUS_SUCCESS, 0)

    io, device = make(Helper())
    async with airp.run_device(device), io.open("\\Device\\Serial") as handle:
        requests = [await handle.read_overlapped(0, offset=n) for n in range(3)]
        for r in requests:
            await r
    assert virtual_clock.now() == pytest.approx(3.0)


# -- bad input ------------------------------------------------------------------------------------


async def test_start_next_on_an_idle_device_is_an_error() -> None:
    _io, device = make(StartIoDriver())
    async with airp.run_device(device):
        with pytest.raises(DeviceQueueError, match="idle"):
            start_next_packet(device)
        with pytest.raises(DeviceQueueError, match="idle"):
            airp.start_next_packet_by_key(device, 3)


async def test_starting_an_irp_twice_is_an_error() -> None:
    class Twice(StartIoDriver):
        @airp.dispatch(IrpMajor.READ)
        async def read(self, device: DeviceObject, irp: Irp) -> int:
            airp.start_packet(device, irp)
            with pytest.raises(DeviceQueueError, match="already queued or being started"):
                airp.start_packet(device, irp)
            return STATUS_PENDING

    io, device = make(Twice(duration=1))
    async with airp.run_device(device), io.open("\\Device\\Serial") as handle:
        first = await handle.read_overlapped(0, offset=1)  # current
        second = await handle.read_overlapped(0, offset=2)  # queued
        await first
        await second


async def test_start_packet_on_a_device_that_is_not_running() -> None:
    io, _device = make(StartIoDriver())
    async with io.open("\\Device\\Serial") as handle:
        with pytest.raises(RuntimeError, match="run_device"):
            await handle.read_overlapped(0)
        # The IRP is not lost: it was completed before the error was raised.
    assert io.outstanding_requests() == []


async def test_driver_without_start_io() -> None:
    class NoStartIo(airp.Driver):
        pass

    io = airp.IoManager()
    device = io.create_device(NoStartIo())
    with pytest.raises(TypeError, match="no StartIo routine"):
        device_queue(device)


async def test_start_io_must_be_a_coroutine_function() -> None:
    class SyncStartIo(airp.Driver):
        def start_io(self, device: DeviceObject, irp: Irp) -> None:
            pass

    io = airp.IoManager()
    device = io.create_device(SyncStartIo())
    with pytest.raises(TypeError, match="async def"):
        device_queue(device)


async def test_bad_sort_key() -> None:
    class BadKey(StartIoDriver):
        @airp.dispatch(IrpMajor.READ)
        async def read(self, device: DeviceObject, irp: Irp) -> int:
            with pytest.raises(ValueError, match="ULONG"):
                airp.start_packet(device, irp, key=-1)
            return airp.start_packet(device, irp)

    io, device = make(BadKey(duration=0))
    async with airp.run_device(device), io.open("\\Device\\Serial") as handle:
        assert device_queue(device).busy is False
        await handle.read(0)


# -- a StartIo routine that raises ---------------------------------------------------------------


class Flaky(StartIoDriver):
    async def start_io(self, device: DeviceObject, irp: Irp) -> None:
        tag = irp.current_stack_location.parameters.byte_offset
        self.log.append(("start", tag, anyio.current_time()))
        await anyio.sleep(1)
        if tag == 1:
            raise ValueError("the hardware caught fire")
        complete_request(irp, STATUS_SUCCESS, 0)
        start_next_packet(device)


async def test_raising_start_io_fails_its_irp_and_the_queue_goes_on(virtual_clock: VirtualClock) -> None:
    failures: list[RoutineFailure] = []
    driver = Flaky()
    io, device = make(driver)
    async with airp.run_device(device, on_error=failures.append), io.open("\\Device\\Serial") as handle:
        requests = [await handle.read_overlapped(0, offset=n) for n in range(3)]
        with pytest.raises(NtStatusError) as caught:
            await requests[1]
        assert caught.value.status == STATUS_INTERNAL_ERROR
        await requests[0]
        await requests[2]
    assert starts(driver) == [(0, 0.0), (1, pytest.approx(1.0)), (2, pytest.approx(2.0))]
    assert len(failures) == 1
    failure = failures[0]
    assert failure.irp is requests[1].irp
    assert failure.queue is None  # the system StartIo queue
    assert isinstance(failure.error, ValueError)
    assert failure.status == STATUS_INTERNAL_ERROR
    assert device_tasks(device).failures == failures


async def test_unreported_failures_are_raised_when_the_device_ends(virtual_clock: VirtualClock) -> None:
    io, device = make(Flaky())
    requests: list[airp.Overlapped[bytes]] = []

    async def run() -> None:
        async with airp.run_device(device), io.open("\\Device\\Serial") as handle:
            requests.extend([await handle.read_overlapped(0, offset=n) for n in range(3)])
            for r in requests:
                await r.irp

    with pytest.raises(DeviceRoutineError, match="the hardware caught fire") as caught:
        await run()
    assert isinstance(caught.value.__cause__, ValueError)
    assert [f.irp for f in caught.value.failures] == [requests[1].irp]
    assert [r.irp.status for r in requests] == [STATUS_SUCCESS, STATUS_INTERNAL_ERROR, STATUS_SUCCESS]


async def test_routine_that_raises_after_completing_its_irp(virtual_clock: VirtualClock) -> None:
    failures: list[RoutineFailure] = []

    class Late(StartIoDriver):
        async def start_io(self, device: DeviceObject, irp: Irp) -> None:
            complete_request(irp, STATUS_SUCCESS, 0)
            raise KeyError("after the fact")

    io, device = make(Late())
    async with airp.run_device(device, on_error=failures.append), io.open("\\Device\\Serial") as handle:
        requests = [await handle.read_overlapped(0, offset=n) for n in range(2)]
        for r in requests:
            assert await r == b""  # completed by the routine itself, with success
    assert [f.status for f in failures] == [None, None]  # nothing left for airp to complete
