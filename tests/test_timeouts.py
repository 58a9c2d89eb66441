"""Sending an IRP with a timeout (reference 6.7, 9.5): all on the virtual clock, both backends."""

from __future__ import annotations

import math
import runpy
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from _cancel_drivers import Deaf, HeldReads

import airp
from airp import (
    STATUS_CANCELLED,
    STATUS_IO_TIMEOUT,
    STATUS_PENDING,
    STATUS_SUCCESS,
    DeviceObject,
    DriverCancelTimeoutError,
    DriverCancelTimeoutWarning,
    Irp,
    IrpMajor,
    NtStatusError,
    call_driver_with_timeout,
    complete_request,
)
from airp.testing import VirtualClock, wait_until_quiet

pytestmark = pytest.mark.anyio


def _read_irp(io: airp.IoManager, device: DeviceObject) -> Irp:
    irp = io.new_traced_irp(device.stack_size)
    loc = irp.next_stack_location
    loc.major = IrpMajor.READ
    loc.parameters = airp.ReadWriteParameters(4)
    irp.user_buffer = bytearray(4)
    return irp


def _setup(driver: airp.Driver) -> tuple[airp.IoManager, DeviceObject]:
    io = airp.IoManager()
    return io, io.create_device(driver, "\\Device\\Lower")


async def test_driver_completes_first_its_status_wins(virtual_clock: VirtualClock) -> None:
    driver = HeldReads()
    io, device = _setup(driver)
    irp = _read_irp(io, device)
    async with anyio.create_task_group() as tg:

        async def hardware() -> None:
            await anyio.sleep(2)
            driver.push(b"data")

        tg.start_soon(hardware)
        status = await call_driver_with_timeout(device, irp, 5)
    assert status == (STATUS_SUCCESS, 4)
    assert virtual_clock.now() == pytest.approx(2)
    assert irp.user_buffer == b"data"
    # Handed back: the caller owns the IRP again.
    assert not irp.completed
    assert irp.current_location == irp.stack_count + 1


async def test_expiry_cancels_and_reports_io_timeout(virtual_clock: VirtualClock) -> None:
    driver = HeldReads()
    io, device = _setup(driver)
    irp = _read_irp(io, device)
    status = await call_driver_with_timeout(device, irp, 1.5)
    assert status.status == STATUS_IO_TIMEOUT
    assert irp.status == STATUS_IO_TIMEOUT
    assert irp.cancel
    assert len(driver.queue) == 0
    assert virtual_clock.now() == pytest.approx(1.5)


async def test_expiry_but_driver_finishes_anyway_keeps_its_status(virtual_clock: VirtualClock) -> None:
    driver = Deaf()
    io, device = _setup(driver)
    irp = _read_irp(io, device)
    async with anyio.create_task_group() as tg:

        async def hardware() -> None:
            await anyio.sleep(4)
            driver.release_all(STATUS_SUCCESS)

        tg.start_soon(hardware)
        status = await call_driver_with_timeout(device, irp, 1)
    assert status.status == STATUS_SUCCESS
    assert virtual_clock.now() == pytest.approx(4)


async def test_synchronous_completion_never_waits(virtual_clock: VirtualClock) -> None:
    class Quick(airp.Driver):
        @airp.dispatch(IrpMajor.READ)
        async def read(self, device: DeviceObject, irp: Irp) -> int:
            complete_request(irp, airp.STATUS_END_OF_FILE, 0)
            return airp.STATUS_END_OF_FILE

    io, device = _setup(Quick())
    irp = _read_irp(io, device)
    status = await call_driver_with_timeout(device, irp, 0)
    assert status.status == airp.STATUS_END_OF_FILE
    assert not irp.cancel


async def test_zero_timeout_cancels_a_pended_irp_at_once(virtual_clock: VirtualClock) -> None:
    driver = HeldReads()
    io, device = _setup(driver)
    status = await call_driver_with_timeout(device, _read_irp(io, device), 0)
    assert status.status == STATUS_IO_TIMEOUT
    assert virtual_clock.now() == 0.0


async def test_none_means_no_timeout(virtual_clock: VirtualClock) -> None:
    driver = HeldReads()
    io, device = _setup(driver)
    async with anyio.create_task_group() as tg:

        async def hardware() -> None:
            await anyio.sleep(10_000)
            driver.push(b"late")

        tg.start_soon(hardware)
        status = await call_driver_with_timeout(device, _read_irp(io, device), None)
    assert status.status == STATUS_SUCCESS
    assert virtual_clock.now() == pytest.approx(10_000)


@pytest.mark.parametrize("bad", [-1, -0.001, math.nan, -math.inf])
async def test_negative_or_nan_timeout_is_refused_before_sending(bad: float) -> None:
    driver = HeldReads()
    io, device = _setup(driver)
    irp = _read_irp(io, device)
    with pytest.raises(ValueError, match="timeout"):
        await call_driver_with_timeout(device, irp, bad)
    assert irp.current_location == irp.stack_count + 1  # not sent
    assert irp.next_stack_location.completion_routine is None
    assert len(driver.queue) == 0


async def test_non_number_timeout_is_refused() -> None:
    io, device = _setup(HeldReads())
    with pytest.raises(TypeError, match="timeout"):
        await call_driver_with_timeout(device, _read_irp(io, device), "5")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cancel_wait_limit"):
        await call_driver_with_timeout(device, _read_irp(io, device), 1, cancel_wait_limit=-1)


async def test_driver_that_never_hands_back_raises_cancel_timeout(virtual_clock: VirtualClock) -> None:
    driver = Deaf()
    io, device = _setup(driver)
    irp = _read_irp(io, device)
    with pytest.warns(DriverCancelTimeoutWarning), pytest.raises(DriverCancelTimeoutError) as info:
        await call_driver_with_timeout(device, irp, 1, cancel_wait_limit=9)
    assert info.value.status == airp.STATUS_DRIVER_CANCEL_TIMEOUT
    assert info.value.irp is irp
    assert info.value.device is device
    assert isinstance(info.value, NtStatusError)
    assert virtual_clock.now() == pytest.approx(10)
    driver.release_all()


async def test_outer_cancellation_is_not_a_timeout(virtual_clock: VirtualClock) -> None:
    driver = HeldReads()
    io, device = _setup(driver)
    irp = _read_irp(io, device)
    with anyio.move_on_after(1) as scope:
        await call_driver_with_timeout(device, irp, 5)
    assert scope.cancelled_caught
    assert irp.status == STATUS_CANCELLED  # our timer did not fire: no STATUS_IO_TIMEOUT
    assert virtual_clock.now() == pytest.approx(1)


async def test_deadline_runs_from_the_send(virtual_clock: VirtualClock) -> None:
    class SlowDispatch(airp.Driver):
        def __init__(self) -> None:
            super().__init__()
            self.queue = airp.IrpQueue()

        @airp.dispatch(IrpMajor.READ)
        async def read(self, device: DeviceObject, irp: Irp) -> int:
            await anyio.sleep(3)  # the dispatch routine itself takes 3 s
            return self.queue.insert(irp)

    io, device = _setup(SlowDispatch())
    status = await call_driver_with_timeout(device, _read_irp(io, device), 1)
    assert status.status == STATUS_IO_TIMEOUT
    assert virtual_clock.now() == pytest.approx(3)  # expired during dispatch: cancelled at once


async def test_forward_with_timeout_in_a_filter(virtual_clock: VirtualClock) -> None:
    class TimeoutFilter(airp.Driver):
        pass_through = True

        @airp.dispatch(IrpMajor.READ)
        async def read(self, device: DeviceObject, irp: Irp) -> int:
            assert device.lower_device is not None
            status = await airp.forward_with_timeout(device.lower_device, irp, 2)
            complete_request(irp, status.status, status.information)
            return status.status

    io = airp.IoManager()
    lower_driver = HeldReads()
    lower = io.create_device(lower_driver, None)
    top = io.create_device(TimeoutFilter(), "\\Device\\Timed")
    airp.attach_device(top, lower)
    async with await io.open("\\Device\\Timed") as handle:
        with pytest.raises(NtStatusError) as info:
            await handle.read(4)
        assert info.value.status == STATUS_IO_TIMEOUT
        assert virtual_clock.now() == pytest.approx(2)
        with pytest.raises(ValueError, match="timeout"):
            await airp.forward_with_timeout(lower, Irp(2), -5)


async def test_classic_pattern_with_reused_irp(virtual_clock: VirtualClock) -> None:
    # The caller's IRP comes back every time, so it can be reused for the next attempt.
    driver = HeldReads()
    io, device = _setup(driver)
    irp = _read_irp(io, device)
    attempts: list[int] = []
    for attempt in range(3):
        if attempt == 2:

            async def feed() -> None:
                await wait_until_quiet()
                driver.push(b"ok!!")

            async with anyio.create_task_group() as tg:
                tg.start_soon(feed)
                status = await call_driver_with_timeout(device, irp, 1)
        else:
            status = await call_driver_with_timeout(device, irp, 1)
        attempts.append(status.status)
        saved = irp.user_buffer
        irp._reinitialize()
        irp.user_buffer = saved
        loc = irp.next_stack_location
        loc.major = IrpMajor.READ
        loc.parameters = airp.ReadWriteParameters(4)
    assert attempts == [STATUS_IO_TIMEOUT, STATUS_IO_TIMEOUT, STATUS_SUCCESS]
    assert virtual_clock.now() == pytest.approx(2)


async def test_cancel_routine_completing_with_success_wins(virtual_clock: VirtualClock) -> None:
    # A driver whose cancel routine finishes the transfer with what it has: the data stands.
    class Partial(airp.Driver):
        @airp.dispatch(IrpMajor.READ)
        async def read(self, device: DeviceObject, irp: Irp) -> int:
            irp.mark_pending()

            def on_cancel(dev: DeviceObject | None, irp: Irp) -> None:
                complete_request(irp, STATUS_SUCCESS, 2)

            airp.mark_irp_cancelable(irp, on_cancel)
            return STATUS_PENDING

    io, device = _setup(Partial())
    status = await call_driver_with_timeout(device, _read_irp(io, device), 1)
    assert status == (STATUS_SUCCESS, 2)


async def test_requester_side_timeout_is_fail_after(virtual_clock: VirtualClock) -> None:
    io, _ = _setup(HeldReads())
    async with await io.open("\\Device\\Lower") as handle:
        with pytest.raises(TimeoutError):
            with anyio.fail_after(0.25):
                await handle.read(1)
        assert virtual_clock.now() == pytest.approx(0.25)


# -- the example script: examples/call_with_timeout.py ----------------------------------------------------

_EXAMPLE_CALL_WITH_TIMEOUT = Path(__file__).resolve().parent.parent / "examples" / "call_with_timeout.py"
_EXPECTED_CALL_WITH_TIMEOUT = """\
1. the sensor answers in 2s, the caller allows 5s:
   2.0s sensor: measurement done, completing with STATUS_SUCCESS
  -> STATUS_SUCCESS after 2.0s, value=421, cancel flag=False
2. the sensor would take 10s, the caller allows 1s:
  -> STATUS_IO_TIMEOUT after 1.0s, value=None, cancel flag=True
3. a deaf sensor takes 3s and ignores the cancel at 1s:
   6.0s sensor: measurement done, completing with STATUS_SUCCESS
  -> STATUS_SUCCESS after 3.0s, value=421, cancel flag=True
  12.0s sensor: a measurement is due, but its request was cancelled
"""


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_example_call_with_timeout(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    namespace = runpy.run_path(str(_EXAMPLE_CALL_WITH_TIMEOUT), run_name="airp_example_call_with_timeout")
    namespace["main"](backend)
    assert capsys.readouterr().out == _EXPECTED_CALL_WITH_TIMEOUT
    doc: str = namespace["__doc__"]
    assert "Reference: irp-semantics.md" in doc
    assert "python examples/call_with_timeout.py [--backend trio]" in doc


def test_example_call_with_timeout_as_a_script() -> None:
    result = subprocess.run(
        [sys.executable, str(_EXAMPLE_CALL_WITH_TIMEOUT), "--backend", "trio"], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == _EXPECTED_CALL_WITH_TIMEOUT
    assert result.stderr == ""
