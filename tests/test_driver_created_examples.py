"""The issue #3 examples, run: a driver sending its own IRP per request (allocate-and-free, then
pooled), and a filter splitting a large read into associated IRPs."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from _own_irp_drivers import load_example, must

import airp
from airp import STATUS_CANCELLED, Irp

own_irp = load_example("own_irp_per_request")
split = load_example("split_read_associated")


# -- a driver that sends its own IRP per request ---------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("variant", ["allocate", "pool"])
async def test_every_read_is_served_by_an_irp_of_the_drivers_own(variant: str) -> None:
    summary = await own_irp.run(variant, reads=120, concurrency=6)
    assert summary.succeeded == 120
    assert summary.insufficient_resources == 0
    assert sorted(summary.reports) == [f"report {n:05d}".encode() for n in range(1, 121)]
    stats = summary.allocator
    assert stats.outstanding == 0
    if variant == "allocate":
        # Each read allocated and freed one IRP: the small lookaside list recycled them.
        assert stats.small.total_allocations == 120
        assert stats.small.hits >= 120 - 6
        assert summary.pool is None
    else:
        # The pool allocated at most one IRP per concurrent read and reused them afterwards.
        pool = summary.pool
        assert pool.allocated <= 6
        assert pool.reused + pool.allocated == 120
        assert stats.small.total_allocations == pool.allocated
        assert summary.pool_report.clean
        assert summary.pool_report.freed == pool.allocated


@pytest.mark.anyio
async def test_the_example_pended_each_read_and_completed_it_from_the_routine() -> None:
    """The read is pended (the requester waits), the bus completes the transfer from another task,
    and the transfer's completion routine completes the read."""
    io = airp.IoManager()
    bus_driver = own_irp.UsbBus()
    bus_driver.start()
    try:
        bus = io.create_device(bus_driver)
        reader = io.create_device(own_irp.ReportReader(), "\\Device\\R", flags=airp.DeviceFlags.BUFFERED_IO)
        airp.attach_device(reader, bus)
        reader.extension = own_irp.AllocateAndFree(bus, airp.IrpAllocator())
        async with io.open("\\Device\\R") as handle:
            request = await handle.read_overlapped(16)
            assert request.status_returned == airp.STATUS_PENDING
            assert not request.done
            async with anyio.create_task_group() as tg:
                tg.start_soon(bus_driver.hardware)
                assert await request == b"report 00001"
                tg.cancel_scope.cancel()
    finally:
        bus_driver.stop()


@pytest.mark.anyio
async def test_the_bus_refuses_other_requests() -> None:
    io = airp.IoManager()
    bus_driver = own_irp.UsbBus()
    bus = io.create_device(bus_driver)
    irp = must(airp.allocate_irp(bus.stack_size))
    irp.next_stack_location.major = airp.IrpMajor.INTERNAL_DEVICE_CONTROL
    irp.next_stack_location.parameters = airp.OtherParameters(argument3=0x1234)
    got: list[Any] = []

    def note(device: airp.DeviceObject | None, irp: Irp, context: Any) -> int:
        got.append(irp.status)
        return airp.STATUS_MORE_PROCESSING_REQUIRED

    irp.set_completion_routine(note)
    await airp.send_irp(bus, irp)
    assert got == [airp.STATUS_INVALID_DEVICE_REQUEST]


def test_the_example_script_runs(capsys: pytest.CaptureFixture[str]) -> None:
    own_irp.main(["pool", "--reads", "30", "--low-resources", "0.2", "--seed", "3"])
    out = capsys.readouterr().out
    assert "pool:" in out
    assert "reads succeeded" in out
    assert "simulation:" in out
    own_irp.main(["allocate", "--reads", "10", "--backend", "trio"])
    assert "10 of 10 reads succeeded" in capsys.readouterr().out
    with pytest.raises(ValueError, match="variant"):
        anyio.run(own_irp.run, "neither")


# -- a filter that splits a large read -------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize(("length", "offset"), [(20_000, 300), (4096, 0), (100, 7), (8193, 1)])
async def test_a_large_read_is_split_and_reassembled(length: int, offset: int) -> None:
    data, stack = await split.read_split(length, offset)
    assert data == split.disk_content(65536)[offset : offset + length]
    assert stack.disk.largest_request <= split.MAX_TRANSFER
    parts = -(-length // split.MAX_TRANSFER)
    assert stack.disk.served == parts
    assert stack.splitter.split_reads == (1 if parts > 1 else 0)


@pytest.mark.anyio
async def test_the_split_master_completes_with_its_last_part() -> None:
    allocator = airp.IrpAllocator()
    stack = split.build_stack(split.disk_content(65536), hold=True, allocator=allocator)
    try:
        async with stack.io.open(split.DISK_NAME) as handle:
            request = await handle.read_overlapped(3 * split.MAX_TRANSFER, offset=8)
            assert len(stack.disk.held) == 3
            assert not request.done
            master: Irp = request.irp
            assert master.associated_irp_count == 3
            assert len(airp.associated_irps(master)) == 3
            stack.disk.release(2)
            assert not request.done
            assert master.associated_irp_count == 1
            stack.disk.release()
            assert request.done
            assert await request == split.disk_content(65536)[8 : 8 + 3 * split.MAX_TRANSFER]
        stats = allocator.statistics()
        assert stats.outstanding == 0
        assert stats.pool_frees == 3
    finally:
        stack.disk.stop()


@pytest.mark.anyio
async def test_cancelling_a_split_read_cancels_its_parts() -> None:
    stack = split.build_stack(split.disk_content(65536), hold=True)
    try:
        async with stack.io.open(split.DISK_NAME) as handle:
            request = await handle.read_overlapped(2 * split.MAX_TRANSFER + 1)
            assert len(stack.disk.held) == 3
            stack.disk.release(1)
            assert airp.cancel_irp(request.irp)  # the master's cancel routine ran
            assert stack.disk.held == []
            with pytest.raises(airp.NtStatusError) as info:
                await request
            assert info.value.status == STATUS_CANCELLED
    finally:
        stack.disk.stop()


@pytest.mark.anyio
async def test_a_split_read_fails_cleanly_under_low_resources() -> None:
    allocator = airp.IrpAllocator(low_resources=airp.LowResourcesSimulation(1.0))
    stack = split.build_stack(split.disk_content(65536), allocator=allocator)
    try:
        async with stack.io.open(split.DISK_NAME) as handle:
            with pytest.raises(airp.NtStatusError) as info:
                await handle.read(10_000)
        assert info.value.status == airp.STATUS_INSUFFICIENT_RESOURCES
        assert allocator.statistics().outstanding == 0
    finally:
        stack.disk.stop()


def test_the_split_script_runs(capsys: pytest.CaptureFixture[str]) -> None:
    split.main(["--length", "10000", "--offset", "5"])
    out = capsys.readouterr().out
    assert "read 10000 bytes at 5: correct" in out
    assert "split 1 read(s)" in out
