"""Closing a handle (reference 6.5): IRP_MJ_CLEANUP, and every IRP of the handle completed first."""

from __future__ import annotations

import runpy
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from _cancel_drivers import Deaf, HeldReads, make_io

import airp
from airp import (
    STATUS_CANCELLED,
    STATUS_SUCCESS,
    DeviceObject,
    DriverCancelTimeoutWarning,
    Irp,
    IrpMajor,
    NtStatusError,
    complete_request,
)
from airp.testing import VirtualClock, wait_until_quiet

pytestmark = pytest.mark.anyio


async def test_close_completes_held_reads_as_cancelled(virtual_clock: VirtualClock) -> None:
    driver = HeldReads()
    io, _ = make_io(driver)
    handle = await io.open("\\Device\\Test")
    other = await io.open("\\Device\\Test")
    mine = [await handle.read_overlapped(4) for _ in range(3)]
    theirs = await other.read_overlapped(4)
    await handle.close()
    # Before close returned: every IRP of the closed handle has completed, as cancelled.
    assert all(r.irp.completed and r.irp.status == STATUS_CANCELLED for r in mine)
    assert driver.cleanups == 1
    # Other handles are untouched.
    assert not theirs.irp.completed
    assert list(driver.queue) == [theirs.irp]
    assert io.outstanding_requests(handle.file_object) == []
    assert io.outstanding_requests() == [theirs.irp]
    await other.close()
    assert theirs.irp.status == STATUS_CANCELLED
    assert virtual_clock.now() == 0.0


async def test_requesters_blocked_in_reads_see_cancelled(virtual_clock: VirtualClock) -> None:
    driver = HeldReads()
    io, _ = make_io(driver)
    handle = await io.open("\\Device\\Test")
    errors: list[int] = []

    async def reader() -> None:
        with pytest.raises(NtStatusError) as info:
            await handle.read(4)
        errors.append(info.value.status)

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(reader)
        await wait_until_quiet()
        assert len(driver.queue) == 4
        await handle.close()
    assert errors == [STATUS_CANCELLED] * 4


async def test_cleanup_then_close_order() -> None:
    majors: list[int] = []

    class Recorder(airp.Driver):
        @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLEANUP, IrpMajor.CLOSE)
        async def any_(self, device: DeviceObject, irp: Irp) -> int:
            majors.append(irp.current_stack_location.major)
            complete_request(irp, STATUS_SUCCESS, 0)
            return STATUS_SUCCESS

    io, _ = make_io(Recorder())
    async with await io.open("\\Device\\Test"):
        pass
    assert majors == [IrpMajor.CREATE, IrpMajor.CLEANUP, IrpMajor.CLOSE]


async def test_safety_net_for_a_driver_that_forgets_cleanup(virtual_clock: VirtualClock) -> None:
    # The driver's reads are cancelable (a cancel-safe queue) but its CLEANUP does nothing: airp
    # cancels what the handle still has outstanding once CLEANUP has completed.
    driver = HeldReads(cleanup=False)
    io, _ = make_io(driver)
    handle = await io.open("\\Device\\Test")
    requests = [await handle.read_overlapped(2) for _ in range(2)]
    await handle.close()
    assert all(r.irp.status == STATUS_CANCELLED for r in requests)
    assert len(driver.queue) == 0


async def test_driver_that_ignores_cleanup_and_cancel_is_reported(virtual_clock: VirtualClock) -> None:
    airp.set_cancel_wait_limit(30)
    driver = Deaf()
    io, device = make_io(driver)
    handle = await io.open("\\Device\\Test")
    request = await handle.read_overlapped(2)
    with pytest.warns(DriverCancelTimeoutWarning) as record:
        await handle.close()
    assert handle.file_object.closed
    assert virtual_clock.now() == pytest.approx(30)
    warning = record[0].message
    assert isinstance(warning, DriverCancelTimeoutWarning)
    assert warning.device is device
    assert airp.is_disowned(request.irp)
    driver.release_all()


async def test_no_new_requests_once_closing(virtual_clock: VirtualClock) -> None:
    driver = HeldReads()
    io, _ = make_io(driver)
    handle = await io.open("\\Device\\Test")
    await handle.close()
    with pytest.raises(ValueError, match="closed"):
        await handle.read(1)
    await handle.close()  # closing twice does nothing
    assert driver.cleanups == 1


async def test_close_in_a_cancelled_scope_still_closes(virtual_clock: VirtualClock) -> None:
    driver = HeldReads()
    io, _ = make_io(driver)
    handle = await io.open("\\Device\\Test")
    request = await handle.read_overlapped(4)
    with anyio.CancelScope() as scope:
        scope.cancel()
        await handle.close()
        pytest.fail("close must raise the cancellation once the handle is closed")  # pragma: no cover
    assert scope.cancelled_caught
    assert handle.file_object.closed
    assert request.irp.status == STATUS_CANCELLED
    assert driver.cleanups == 1


async def test_context_manager_exit_on_error_closes(virtual_clock: VirtualClock) -> None:
    driver = HeldReads()
    io, _ = make_io(driver)
    held: list[airp.Overlapped[bytes]] = []

    async def use() -> None:
        async with io.open("\\Device\\Test") as handle:
            held.append(await handle.read_overlapped(4))
            raise KeyError("boom")

    with pytest.raises(KeyError):
        await use()
    assert held[0].irp.status == STATUS_CANCELLED


async def test_cleanup_with_requests_arriving_concurrently(virtual_clock: VirtualClock) -> None:
    # Readers keep issuing while the handle closes: each request either completes cancelled
    # or is refused because the handle is closing; nothing is left held.
    driver = HeldReads()
    io, _ = make_io(driver)
    handle = await io.open("\\Device\\Test")
    outcomes: list[str] = []

    async def reader() -> None:
        while True:
            try:
                await handle.read(1)
            except NtStatusError as exc:
                outcomes.append(exc.status.name)
            except ValueError:
                outcomes.append("refused")
                return
            await anyio.sleep(0.5)

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(reader)
        await anyio.sleep(1.2)
        await handle.close()
    assert len(driver.queue) == 0
    assert outcomes.count("refused") == 3
    assert set(outcomes) <= {"STATUS_CANCELLED", "refused"}


# -- the example script: examples/held_reads.py ----------------------------------------------------

_EXAMPLE_HELD_READS = Path(__file__).resolve().parent.parent / "examples" / "held_reads.py"
_EXPECTED_HELD_READS = """\
1. a reader waits; data arrives after 2s
   2.0s requester: read -> b'hello'
   2.0s Pipe: IRP_MJ_CLEANUP: completed 0 held read(s) of the closing handle as cancelled
2. a reader gives up after 3s (fail_after): its read is cancelled
   5.0s requester: TimeoutError; reads still held by the pipe: 0
   5.0s Pipe: IRP_MJ_CLEANUP: completed 0 held read(s) of the closing handle as cancelled
3. two readers are blocked when their handle is closed
   5.0s closing the handle with 2 reads held
   5.0s Pipe: IRP_MJ_CLEANUP: completed 2 held read(s) of the closing handle as cancelled
   5.0s close returned; reads still held: 0
  reader 1: 5.0s STATUS_CANCELLED
  reader 2: 5.0s STATUS_CANCELLED
4. a task issues overlapped reads and leaves: task_io cancels them
   5.0s task: 2 of its reads outstanding as it leaves
   5.0s after the block: ['STATUS_SUCCESS', 'STATUS_CANCELLED', 'STATUS_CANCELLED']
   5.0s Pipe: IRP_MJ_CLEANUP: completed 0 held read(s) of the closing handle as cancelled
"""


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_example_held_reads(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    namespace = runpy.run_path(str(_EXAMPLE_HELD_READS), run_name="airp_example_held_reads")
    namespace["main"](backend)
    assert capsys.readouterr().out == _EXPECTED_HELD_READS
    doc: str = namespace["__doc__"]
    assert "Reference: irp-semantics.md" in doc
    assert "python examples/held_reads.py [--backend trio]" in doc


def test_example_held_reads_as_a_script() -> None:
    result = subprocess.run(
        [sys.executable, str(_EXAMPLE_HELD_READS), "--backend", "trio"], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == _EXPECTED_HELD_READS
    assert result.stderr == ""
