"""The driver books' custom StartIo scenario (seed 004): a device with a read lane and a write lane.

Ten reads and ten writes arrive at once; each takes three seconds of device time.  Each lane is
serial, the two lanes run side by side: reads finish at 3, 6, ... 30 virtual seconds, writes
likewise, and everything is done at 30 seconds, not 60.  Then the same with synchronous callers,
and the chapter's lesson: the requester sees the IRP's IoStatus, not what the dispatch routine
returned.
"""

from __future__ import annotations

import runpy
from pathlib import Path

import anyio
import pytest

import airp
from airp import (
    STATUS_DEVICE_NOT_READY,
    STATUS_PENDING,
    STATUS_SUCCESS,
    DeviceFlags,
    DeviceObject,
    Irp,
    IrpMajor,
    NtStatusError,
    StartIoQueue,
    complete_request,
)
from airp.testing import VirtualClock

pytestmark = pytest.mark.anyio

DEVICE_TIME = 3.0


class Lanes:
    def __init__(self, device: DeviceObject) -> None:
        self.read = StartIoQueue(device, "read", self.read_start_io)
        self.write = StartIoQueue(device, "write", self.write_start_io)
        self.finished: list[tuple[str, int, float]] = []
        self.fail_reads_with: int | None = None

    async def read_start_io(self, device: DeviceObject, irp: Irp) -> None:
        await anyio.sleep(DEVICE_TIME)
        params = irp.current_stack_location.parameters
        assert irp.system_buffer is not None
        irp.system_buffer[: params.length] = bytes([params.byte_offset % 256]) * params.length
        self.finished.append(("read", params.byte_offset, anyio.current_time()))
        if self.fail_reads_with is not None:
            complete_request(irp, self.fail_reads_with, 0)
        else:
            complete_request(irp, STATUS_SUCCESS, params.length)

    async def write_start_io(self, device: DeviceObject, irp: Irp) -> None:
        await anyio.sleep(DEVICE_TIME)
        params = irp.current_stack_location.parameters
        self.finished.append(("write", params.byte_offset, anyio.current_time()))
        complete_request(irp, STATUS_SUCCESS, params.length)


class LanesDriver(airp.Driver):
    """The seed's driver: the dispatch routine queues the IRP on its lane and returns PENDING."""

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLOSE, IrpMajor.CLEANUP)
    async def create_close(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        return device.extension.read.start_packet(irp)  # type: ignore[no-any-return]

    @airp.dispatch(IrpMajor.WRITE)
    async def write(self, device: DeviceObject, irp: Irp) -> int:
        return device.extension.write.start_packet(irp)  # type: ignore[no-any-return]


def make_device() -> tuple[airp.IoManager, DeviceObject, Lanes]:
    io = airp.IoManager()
    device = io.create_device(LanesDriver(), "\\Device\\Lanes", flags=DeviceFlags.BUFFERED_IO)
    lanes = device.extension = Lanes(device)
    return io, device, lanes


EXPECTED = [pytest.approx(DEVICE_TIME * n) for n in range(1, 11)]


async def test_overlapped_reads_and_writes_run_side_by_side(virtual_clock: VirtualClock) -> None:
    io, device, lanes = make_device()
    async with airp.run_device(device), io.open("\\Device\\Lanes") as handle:
        reads = [await handle.read_overlapped(4, offset=n) for n in range(10)]
        writes = [await handle.write_overlapped(b"data", offset=n) for n in range(10)]
        # Every call returned at once, with the IRP still pending.
        assert anyio.current_time() == 0
        assert all(r.status_returned == STATUS_PENDING for r in reads + writes)
        read_done: list[float] = []
        write_done: list[float] = []

        async def wait_reads() -> None:
            for n, r in enumerate(reads):
                assert await r == bytes([n]) * 4
                read_done.append(anyio.current_time())

        async def wait_writes() -> None:
            for w in writes:
                assert await w == 4
                write_done.append(anyio.current_time())

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_reads)
            tg.start_soon(wait_writes)
    assert read_done == EXPECTED
    assert write_done == EXPECTED
    assert virtual_clock.now() == pytest.approx(30)  # not 60
    assert [t for kind, _, t in lanes.finished if kind == "read"] == EXPECTED
    assert [t for kind, _, t in lanes.finished if kind == "write"] == EXPECTED
    # Each lane served its IRPs in arrival order.
    assert [n for kind, n, _ in lanes.finished if kind == "read"] == list(range(10))
    assert lanes.read.started == lanes.write.started == 10


async def test_synchronous_callers_return_only_when_their_irp_is_done(virtual_clock: VirtualClock) -> None:
    # One reader and one writer, each issuing ten synchronous calls one after the other.
    io, device, lanes = make_device()
    returned: dict[str, list[float]] = {"read": [], "write": []}

    async def reader(handle: airp.FileHandle) -> None:
        for n in range(10):
            data = await handle.read(4, offset=n)
            assert data == bytes([n]) * 4
            # The call returned only once StartIo had completed this very IRP.
            assert ("read", n, anyio.current_time()) in lanes.finished
            returned["read"].append(anyio.current_time())

    async def writer(handle: airp.FileHandle) -> None:
        for n in range(10):
            assert await handle.write(b"data", offset=n) == 4
            returned["write"].append(anyio.current_time())

    async with (
        airp.run_device(device),
        io.open("\\Device\\Lanes", synchronous=True) as handle,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(reader, handle)
        tg.start_soon(writer, handle)
    assert returned["read"] == EXPECTED
    assert returned["write"] == EXPECTED
    assert virtual_clock.now() == pytest.approx(30)


async def test_twenty_synchronous_callers_at_once(virtual_clock: VirtualClock) -> None:
    # Ten tasks reading and ten writing, one synchronous call each, all at time 0.
    io, device, _lanes = make_device()
    returned: dict[str, list[float]] = {"read": [], "write": []}

    async def call(handle: airp.FileHandle, kind: str, n: int) -> None:
        if kind == "read":
            await handle.read(4, offset=n)
        else:
            await handle.write(b"data", offset=n)
        returned[kind].append(anyio.current_time())

    async with airp.run_device(device), io.open("\\Device\\Lanes") as handle, anyio.create_task_group() as tg:
        for n in range(10):
            tg.start_soon(call, handle, "read", n)
            tg.start_soon(call, handle, "write", n)
    assert sorted(returned["read"]) == EXPECTED
    assert sorted(returned["write"]) == EXPECTED
    assert virtual_clock.now() == pytest.approx(30)


async def test_the_requester_sees_iostatus_not_the_dispatch_return_value(virtual_clock: VirtualClock) -> None:
    io, device, lanes = make_device()
    async with airp.run_device(device), io.open("\\Device\\Lanes") as handle:
        ok = await handle.read_overlapped(4, offset=7)
        # The dispatch routine returned STATUS_PENDING ...
        assert ok.status_returned == STATUS_PENDING
        assert ok.io_status_block is None
        # ... but what the requester gets is the IoStatus StartIo wrote when it completed the IRP.
        assert await ok == b"\x07" * 4
        assert ok.io_status_block == (STATUS_SUCCESS, 4)
        assert ok.irp.io_status == (STATUS_SUCCESS, 4)

        lanes.fail_reads_with = STATUS_DEVICE_NOT_READY
        bad = await handle.read_overlapped(4)
        assert bad.status_returned == STATUS_PENDING  # the same return value ...
        with pytest.raises(NtStatusError) as caught:
            await bad
        assert caught.value.status == STATUS_DEVICE_NOT_READY  # ... a different result
        assert bad.io_status_block is not None
        assert bad.io_status_block.status == STATUS_DEVICE_NOT_READY


class CompleteInsideDispatch(airp.Driver):
    """The seed's first experiment: the IRP is completed inside the dispatch routine (the idle
    device started it at once), and the routine still returns STATUS_PENDING."""

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLOSE, IrpMajor.CLEANUP)
    async def create_close(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        irp.mark_pending()
        await anyio.sleep(DEVICE_TIME)
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_PENDING


async def test_completed_in_dispatch_yet_returned_pending_still_succeeds(virtual_clock: VirtualClock) -> None:
    io = airp.IoManager()
    io.create_device(CompleteInsideDispatch(), "\\Device\\Inline", flags=DeviceFlags.BUFFERED_IO)
    async with io.open("\\Device\\Inline") as handle:
        request = await handle.read_overlapped(0)
        assert request.status_returned == STATUS_PENDING
        assert request.done  # already complete when the dispatch routine returned
        assert await request == b""
        assert request.io_status_block == (STATUS_SUCCESS, 0)
    assert virtual_clock.now() == pytest.approx(DEVICE_TIME)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_example_script(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(__file__).resolve().parent.parent / "examples" / "read_write_lanes.py"
    namespace = runpy.run_path(str(path), run_name="airp_example_read_write_lanes")
    assert namespace["main"](backend) == pytest.approx(30)
    out = capsys.readouterr().out
    assert "every dispatch routine returned STATUS_PENDING" in out
    assert "30.00s  read  #9 done: b'r09', IoStatus IoStatus(STATUS_SUCCESS, information=3)" in out
    assert "all done at 30.00s (one lane for everything would take 60.00s)" in out
