"""A cancelled IRP nobody completed is reported with what happened to the cancel.

"whose driver ignores cancellation" was said of every driver, also of one whose cancel routine ran
and did not complete the IRP.  The report now tells apart: no cancel routine was armed (the driver
ignores cancellation), no cancel routine was armed while the IRP waited in a queue of the device
(where), and a cancel routine that ran and did not complete the IRP (which one).
"""

from __future__ import annotations

import anyio
import pytest
from _cancel_drivers import Deaf, make_io

import airp
from airp import (
    STATUS_PENDING,
    STATUS_SUCCESS,
    DeviceObject,
    DriverCancelTimeoutError,
    DriverCancelTimeoutWarning,
    Irp,
    IrpMajor,
    complete_request,
)

pytestmark = pytest.mark.anyio


class ForgetfulCancel(airp.Driver):
    """Holds reads with a cancel routine that forgets to complete the IRP (it only notes the call)."""

    def __init__(self) -> None:
        super().__init__("forgetful")
        self.held: list[Irp] = []
        self.cancels = 0

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLOSE, IrpMajor.CLEANUP)
    async def open_close(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        irp.mark_pending()
        irp.set_cancel_routine(self.on_cancel)
        self.held.append(irp)
        return STATUS_PENDING

    def on_cancel(self, device: DeviceObject | None, irp: Irp) -> None:
        self.cancels += 1  # the bug: neither takes it out of self.held nor completes it

    def release_all(self) -> None:
        held, self.held = self.held, []
        for irp in held:
            irp.set_cancel_routine(None)
            complete_request(irp, STATUS_SUCCESS, 0)


class SlowStartIo(airp.Driver):
    """Serialises reads through StartIo without a cancel routine; StartIo takes 100 s and never
    looks at irp.cancel."""

    def __init__(self) -> None:
        super().__init__("slow")

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLOSE, IrpMajor.CLEANUP)
    async def open_close(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        irp.mark_pending()
        airp.start_packet(device, irp, cancel_routine=None)
        return STATUS_PENDING

    async def start_io(self, device: DeviceObject, irp: Irp) -> None:
        await anyio.sleep(100)
        complete_request(irp, STATUS_SUCCESS, 0)
        airp.start_next_packet(device, False)


async def read_until_disowned(handle: airp.FileHandle) -> DriverCancelTimeoutWarning:
    with pytest.warns(DriverCancelTimeoutWarning) as record, anyio.move_on_after(1):
        await handle.read(1)
    [warning] = [w.message for w in record if isinstance(w.message, DriverCancelTimeoutWarning)]
    return warning


async def test_a_driver_without_a_cancel_routine_is_said_to_ignore_cancellation() -> None:
    airp.set_cancel_wait_limit(3)
    driver = Deaf()
    io, device = make_io(driver)
    async with io.open("\\Device\\Test") as handle:
        warning = await read_until_disowned(handle)
        driver.release_all()
    assert warning.device is device
    assert "no cancel routine was armed" in str(warning)
    assert "ignores cancellation" in str(warning)
    assert warning.what_happened in str(warning)


async def test_a_cancel_routine_that_ran_and_did_not_complete_is_named() -> None:
    airp.set_cancel_wait_limit(3)
    driver = ForgetfulCancel()
    io, _ = make_io(driver)
    async with io.open("\\Device\\Test") as handle:
        warning = await read_until_disowned(handle)
        driver.release_all()
    assert driver.cancels == 1
    message = str(warning)
    assert "its cancel routine ForgetfulCancel.on_cancel ran and did not complete the IRP" in message
    assert "ignores cancellation" not in message
    assert "no cancel routine was armed" not in message
    assert "STATUS_CANCELLED" in message  # what a cancel routine must do


async def test_an_irp_cancelled_in_a_startio_queue_says_where_it_was() -> None:
    airp.set_cancel_wait_limit(3)
    io, device = make_io(SlowStartIo())
    async with airp.run_device(device), io.open("\\Device\\Test") as handle:
        running = await read_until_disowned(handle)  # went to StartIo at once, which takes 100 s
        waiting = await read_until_disowned(handle)  # waited in the device queue behind it
    for warning in (running, waiting):
        assert "no cancel routine was armed when it was cancelled, while it was in <" in str(warning)
        assert "ignores cancellation" not in str(warning)
    assert running.what_happened.endswith("in its StartIo routine")
    assert waiting.what_happened.endswith("waiting")


async def test_the_timeout_error_of_a_driver_waiting_for_its_own_irp_says_it_too() -> None:
    airp.set_cancel_wait_limit(3)
    driver = ForgetfulCancel()
    io, device = make_io(driver)
    irp = io.new_traced_irp(device.stack_size)
    irp.next_stack_location.major = IrpMajor.READ
    with pytest.warns(DriverCancelTimeoutWarning), pytest.raises(DriverCancelTimeoutError) as caught:
        await airp.call_driver_with_timeout(device, irp, 1)
    assert "its cancel routine ForgetfulCancel.on_cancel ran and did not complete the IRP" in str(caught.value)
    driver.release_all()
