"""0x23D and 0x226 name the driver whose dispatch routine returned the wrong status.

The drivers above a lower driver return whatever it returned, so the I/O manager, which checks the
status the *top* driver returned, used to blame the top driver.  With the Verifier (or tracing)
on, ``call_driver`` notes the innermost dispatch routine whose return its IRP contradicts, and
the bug check names it; with both off, 0x226 names the driver holding the IRP.
"""

from __future__ import annotations

import pytest

import airp
from airp import (
    STATUS_PENDING,
    STATUS_SUCCESS,
    BugCheck,
    DeviceObject,
    Irp,
    IrpMajor,
    VerifierCode,
    complete_request,
)

pytestmark = pytest.mark.anyio


class Bottom(airp.Driver):
    """The bottom of the stack; its read dispatch routine returns the wrong status (*misdeed*)."""

    def __init__(self, misdeed: str) -> None:
        super().__init__("bottom")
        self.misdeed = misdeed
        self.held: list[Irp] = []

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLEANUP, IrpMajor.CLOSE)
    async def simple(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        if self.misdeed == "pending without the mark, completed":
            complete_request(irp, STATUS_SUCCESS, 0)
            return STATUS_PENDING
        if self.misdeed == "pending without the mark, held":
            self.held.append(irp)
            return STATUS_PENDING
        if self.misdeed == "marked, then success":
            irp.mark_pending()
            self.held.append(irp)
            return STATUS_SUCCESS
        if self.misdeed == "held, success":
            self.held.append(irp)
            return STATUS_SUCCESS
        # Correct: marks, holds, returns STATUS_PENDING.
        irp.mark_pending()
        self.held.append(irp)
        return STATUS_PENDING


class PassDown(airp.Driver):
    """A filter that passes everything down untouched (skip)."""

    pass_through = True


class Waits(airp.Driver):
    """A filter that forwards reads with a completion routine and returns the lower driver's status,
    or, wrongly, STATUS_SUCCESS if ``makes_up_success``."""

    def __init__(self, *, makes_up_success: bool = False) -> None:
        super().__init__("waits")
        self.makes_up_success = makes_up_success
        self.pass_through = True
        self.set_dispatch(IrpMajor.READ, self.read)

    @staticmethod
    def propagate(device: DeviceObject | None, irp: Irp, context: object) -> int:
        if irp.pending_returned:
            irp.mark_pending()
        return airp.STATUS_CONTINUE_COMPLETION

    async def read(self, device: DeviceObject, irp: Irp) -> int:
        assert device.lower_device is not None
        irp.copy_current_stack_location_to_next()
        irp.set_completion_routine(self.propagate)
        status = await airp.call_driver(device.lower_device, irp)
        return STATUS_SUCCESS if self.makes_up_success else status


def stack(bottom: airp.Driver, *filters: airp.Driver, verifier: bool) -> tuple[airp.IoManager, DeviceObject, list[DeviceObject]]:
    io = airp.IoManager(verifier=airp.Verifier() if verifier else None)
    devices = [io.create_device(bottom)]
    for index, driver in enumerate(filters):
        device = io.create_device(driver, "\\Device\\Top" if index == len(filters) - 1 else None)
        airp.attach_device(device, devices[-1])
        devices.append(device)
    return io, devices[0], devices


@pytest.mark.parametrize("verifier", [True, False], ids=["verifier", "plain"])
@pytest.mark.parametrize("misdeed", ["marked, then success", "held, success"])
async def test_0x226_names_the_lower_driver_that_returned_without_completing(misdeed: str, verifier: bool) -> None:
    driver = Bottom(misdeed)
    io, bottom, devices = stack(driver, PassDown("upper"), PassDown("top"), verifier=verifier)
    async with io.open("\\Device\\Top") as handle:
        with pytest.raises(BugCheck) as caught:
            await handle.read(4)
        for irp in driver.held:  # let the requests go so that the handle closes
            complete_request(irp, STATUS_SUCCESS, 0)
    assert caught.value.verifier_code == VerifierCode.DISPATCH_RETURNED_WITHOUT_PENDING
    assert caught.value.device is bottom
    assert caught.value.driver is driver
    assert devices[-1].driver is not driver
    if misdeed == "marked, then success":
        assert "marked" in str(caught.value)


@pytest.mark.parametrize("forwarding", ["skip", "copy and a routine"])
@pytest.mark.parametrize("misdeed", ["pending without the mark, completed", "pending without the mark, held"])
async def test_0x23d_names_the_lower_driver_that_returned_pending_without_marking(misdeed: str, forwarding: str) -> None:
    driver = Bottom(misdeed)
    filters = [PassDown("upper"), PassDown("top")] if forwarding == "skip" else [Waits(), Waits()]
    io, bottom, _ = stack(driver, *filters, verifier=True)
    async with io.open("\\Device\\Top") as handle:
        if misdeed.endswith("completed"):
            with pytest.raises(BugCheck) as caught:
                await handle.read(4)
        else:
            request = await handle.read_overlapped(4)  # in flight: checked when it completes
            with pytest.raises(BugCheck) as caught:  # the completer gets it...
                complete_request(driver.held.pop(), STATUS_SUCCESS, 0)
            with pytest.raises(BugCheck) as at_await:  # ...and so does the requester
                await request
            assert at_await.value is caught.value
    assert caught.value.verifier_code == VerifierCode.PENDING_NOT_MARKED
    assert caught.value.device is bottom
    assert caught.value.driver is driver


async def test_0x226_names_a_filter_that_made_up_success_for_an_irp_still_below_it() -> None:
    driver = Bottom("correct")
    liar = Waits(makes_up_success=True)
    io, _, devices = stack(driver, liar, PassDown("top"), verifier=True)
    async with io.open("\\Device\\Top") as handle:
        with pytest.raises(BugCheck) as caught:
            await handle.read(4)
        for irp in driver.held:
            complete_request(irp, STATUS_SUCCESS, 0)
    assert caught.value.verifier_code == VerifierCode.DISPATCH_RETURNED_WITHOUT_PENDING
    assert caught.value.device is devices[1]
    assert caught.value.driver is liar


@pytest.mark.parametrize("verifier", [True, False], ids=["verifier", "plain"])
async def test_the_top_driver_is_still_named_when_it_is_the_culprit(verifier: bool) -> None:
    class Top(airp.Driver):
        pass_through = True

        @airp.dispatch(IrpMajor.READ)
        async def read(self, device: DeviceObject, irp: Irp) -> int:
            complete_request(irp, STATUS_SUCCESS, 0)
            return STATUS_PENDING  # never marked

    top = Top("top")
    io, _, devices = stack(Bottom("correct"), top, verifier=verifier)
    async with io.open("\\Device\\Top") as handle:
        with pytest.raises(BugCheck) as caught:
            await handle.read(4)
    assert caught.value.verifier_code == VerifierCode.PENDING_NOT_MARKED
    assert caught.value.device is devices[-1]
    assert caught.value.driver is top


async def test_correct_drivers_under_forced_pending_raise_nothing() -> None:
    """The notes only decide whom a failing check names, and an IRP whose completion the Verifier
    holds back gets none: a correct stack under forced pending raises nothing."""

    class Completes(airp.Driver):
        @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLEANUP, IrpMajor.CLOSE, IrpMajor.READ)
        async def read(self, device: DeviceObject, irp: Irp) -> int:
            complete_request(irp, STATUS_SUCCESS, 2 if irp.current_stack_location.major == IrpMajor.READ else 0)
            return STATUS_SUCCESS

    verifier = airp.Verifier(force_pending=True)
    io = airp.IoManager(verifier=verifier)
    bottom = io.create_device(Completes("completes"))
    middle = io.create_device(Waits())
    airp.attach_device(middle, bottom)
    top = io.create_device(PassDown("top"), "\\Device\\Top")
    airp.attach_device(top, middle)
    async with io.open("\\Device\\Top") as handle:
        assert await handle.read(4) == b"\0\0"
    assert verifier.statistics().forced_pendings >= 1
