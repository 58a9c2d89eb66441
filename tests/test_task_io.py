"""The task as the thread (reference 6.6): ``airp.task_io`` and the IRPs a task issued."""

from __future__ import annotations

import anyio
import pytest
from _cancel_drivers import Deaf, HeldReads, make_io

import airp
from airp import STATUS_CANCELLED, DriverCancelTimeoutWarning, NtStatusError
from airp.testing import VirtualClock, wait_until_quiet

pytestmark = pytest.mark.anyio


async def test_block_exit_cancels_overlapped_requests(virtual_clock: VirtualClock) -> None:
    driver = HeldReads()
    io, _ = make_io(driver)
    async with await io.open("\\Device\\Test") as handle:
        async with airp.task_io() as tio:
            assert airp.current_task_io() is tio
            requests = [await handle.read_overlapped(4) for _ in range(3)]
            assert tio.outstanding == [r.irp for r in requests]
            assert all(r.irp.owner is tio for r in requests)
        assert airp.current_task_io() is None
        assert tio.closed
        assert all(r.irp.status == STATUS_CANCELLED for r in requests)
        assert len(driver.queue) == 0
        assert virtual_clock.now() == 0.0


async def test_completed_requests_leave_the_list(virtual_clock: VirtualClock) -> None:
    driver = HeldReads()
    io, _ = make_io(driver)
    async with await io.open("\\Device\\Test") as handle, airp.task_io() as tio:
        request = await handle.read_overlapped(4)
        assert len(tio) == 1
        driver.push(b"abcd")
        assert len(tio) == 0
        assert await request == b"abcd"


async def test_cancelled_task_cancels_what_it_issued(virtual_clock: VirtualClock) -> None:
    driver = HeldReads()
    io, _ = make_io(driver)
    issued: list[airp.Overlapped[bytes]] = []
    async with await io.open("\\Device\\Test") as handle:

        async def worker() -> None:
            async with airp.task_io():
                issued.append(await handle.read_overlapped(4))
                issued.append(await handle.read_overlapped(4))
                await anyio.sleep_forever()  # not waiting on its requests at all

        async with anyio.create_task_group() as tg:
            tg.start_soon(worker)
            await wait_until_quiet()
            assert len(driver.queue) == 2
            tg.cancel_scope.cancel()
        assert all(r.irp.status == STATUS_CANCELLED for r in issued)


async def test_timeout_on_the_block(virtual_clock: VirtualClock) -> None:
    driver = HeldReads()
    io, _ = make_io(driver)
    async with await io.open("\\Device\\Test") as handle:
        issued: list[airp.Overlapped[bytes]] = []

        async def work() -> None:
            with anyio.fail_after(5):
                async with airp.task_io():
                    issued.append(await handle.read_overlapped(1))
                    issued.append(await handle.read_overlapped(1))
                    await anyio.sleep(60)

        with pytest.raises(TimeoutError):
            await work()
        assert [r.irp.status for r in issued] == [STATUS_CANCELLED] * 2
        assert virtual_clock.now() == pytest.approx(5)


async def test_error_in_block_cancels_and_propagates(virtual_clock: VirtualClock) -> None:
    driver = HeldReads()
    io, _ = make_io(driver)
    held: list[airp.Overlapped[bytes]] = []
    async with await io.open("\\Device\\Test") as handle:

        async def work() -> None:
            async with airp.task_io():
                held.append(await handle.read_overlapped(1))
                raise LookupError("driver said no")

        with pytest.raises(LookupError):
            await work()
        assert held[0].irp.status == STATUS_CANCELLED


async def test_cancel_io_for_one_handle(virtual_clock: VirtualClock) -> None:
    driver = HeldReads()
    io, _ = make_io(driver)
    async with await io.open("\\Device\\Test") as h1, await io.open("\\Device\\Test") as h2, airp.task_io() as tio:
        r1 = await h1.read_overlapped(1)
        r2 = await h2.read_overlapped(1)
        assert await tio.cancel(h1.file_object) == 1
        assert r1.irp.status == STATUS_CANCELLED
        assert not r2.irp.completed
        with pytest.raises(NtStatusError):
            await r1
        assert driver.push(b"x")
        assert await r2 == b"x"
        assert await tio.cancel() == 0


async def test_child_tasks_are_charged_siblings_are_not(virtual_clock: VirtualClock) -> None:
    driver = HeldReads()
    io, _ = make_io(driver)
    outside: list[airp.Overlapped[bytes]] = []
    async with await io.open("\\Device\\Test") as handle, anyio.create_task_group() as outer:
        go = anyio.Event()

        async def sibling() -> None:
            await go.wait()
            outside.append(await handle.read_overlapped(1))

        outer.start_soon(sibling)
        async with airp.task_io() as tio:
            async with anyio.create_task_group() as inner:

                async def child() -> None:
                    await handle.read_overlapped(1)

                inner.start_soon(child)
            go.set()
            await wait_until_quiet()
            assert len(tio.outstanding) == 1  # the child's; not the sibling's
        assert len(outside) == 1
        assert not outside[0].irp.completed
        assert outside[0].irp.owner is None
        driver.push(b"s")


async def test_nested_blocks_charge_the_innermost(virtual_clock: VirtualClock) -> None:
    driver = HeldReads()
    io, _ = make_io(driver)
    async with await io.open("\\Device\\Test") as handle, airp.task_io() as outer:
        a = await handle.read_overlapped(1)
        async with airp.task_io() as inner:
            b = await handle.read_overlapped(1)
            assert outer.outstanding == [a.irp]
            assert inner.outstanding == [b.irp]
        assert b.irp.status == STATUS_CANCELLED
        assert not a.irp.completed
    assert a.irp.status == STATUS_CANCELLED


async def test_requests_after_exit_are_not_charged(virtual_clock: VirtualClock) -> None:
    driver = HeldReads()
    io, _ = make_io(driver)
    async with await io.open("\\Device\\Test") as handle:
        leaked: list[airp.TaskIo] = []

        async def late(task_status: anyio.abc.TaskStatus[None]) -> None:
            task_status.started()
            await anyio.sleep(1)
            tio = airp.current_task_io()
            assert tio is not None
            leaked.append(tio)
            await handle.read_overlapped(1)

        async with anyio.create_task_group() as tg, airp.task_io() as tio:
            await tg.start(late)  # inherits the block's context, outlives the block
        assert leaked == [tio]
        assert tio.closed
        assert len(tio) == 0
        assert len(driver.queue) == 1


async def test_block_exit_with_a_deaf_driver_is_bounded(virtual_clock: VirtualClock) -> None:
    airp.set_cancel_wait_limit(12)
    driver = Deaf()
    io, device = make_io(driver)
    async with await io.open("\\Device\\Test") as handle:
        with pytest.warns(DriverCancelTimeoutWarning) as record:
            async with airp.task_io():
                request = await handle.read_overlapped(1)
        assert virtual_clock.now() == pytest.approx(12)
        warning = record[0].message
        assert isinstance(warning, DriverCancelTimeoutWarning)
        assert warning.device is device
        assert request.irp.owner is None
        assert airp.is_disowned(request.irp)
        driver.release_all()
