"""The Driver Verifier on what used to go unnoticed.

- A driver that writes ``irp.information`` or ``irp.status`` after completing the IRP changes what
  the requester gets.  Under the verifier the write is refused with bug check 0xD5
  (DRIVER_PAGE_FAULT_IN_FREED_SPECIAL_POOL: in Windows the completed request has been freed, and
  I/O verification allocates IRPs from special pool), naming the driver.
- The verifier holds only IRPs in flight: those whose dispatch routine raised are released once
  they complete, and one that nobody completes is still reported by ``check()``.
"""

from __future__ import annotations

import gc
import weakref

import pytest

import airp
from airp import IrpMajor

pytestmark = pytest.mark.anyio

NAME = "\\Device\\Late"


class LateWriter(airp.Driver):
    """Completes each read with 1 byte, then (when told to) writes the IRP again."""

    def __init__(self, field: str | None = None) -> None:
        super().__init__("LateWriter")
        self.field = field

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLEANUP, IrpMajor.CLOSE)
    async def open_close(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        airp.complete_request(irp, airp.STATUS_SUCCESS, 0)
        return airp.STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        assert irp.system_buffer is not None
        irp.system_buffer[:1] = b"x"
        airp.complete_request(irp, airp.STATUS_SUCCESS, 1)
        if self.field == "information":
            irp.information = 4
        elif self.field == "status":
            irp.status = airp.STATUS_END_OF_FILE
        return airp.STATUS_SUCCESS


async def read_one(verifier: airp.Verifier | None, driver: airp.Driver) -> bytes:
    io = airp.IoManager(verifier=verifier)
    io.create_device(driver, NAME, flags=airp.DeviceFlags.BUFFERED_IO)
    async with io.open(NAME) as handle:
        return await handle.read(4)


# -- writing to an IRP after completing it -------------------------------------------------


async def test_without_the_verifier_a_late_write_changes_what_the_requester_gets() -> None:
    """The bug the check is for: nothing stops it without the verifier."""
    assert await read_one(None, LateWriter("information")) == b"x\x00\x00\x00"


@pytest.mark.parametrize("field", ["information", "status"])
async def test_a_late_write_is_bug_check_0xd5_naming_the_driver(field: str) -> None:
    verifier = airp.Verifier()
    with pytest.raises(airp.BugCheck) as caught:
        await read_one(verifier, LateWriter(field))
    check = caught.value
    assert check.code == 0xD5 == airp.Verifier.WRITE_AFTER_COMPLETION
    assert check.driver is not None
    assert check.driver.name == "LateWriter"
    assert check.parameters[1] == 1  # a write
    assert f"irp.{field} =" in str(check)
    assert "DRIVER_PAGE_FAULT_IN_FREED_SPECIAL_POOL" in str(check)
    # Not the misleading 0x224 the status write used to give: the write was refused.
    assert [v.code for v in verifier.violations] == [0xD5]
    assert verifier.violations[0].bug_check == 0xD5
    assert verifier.outstanding() == []


async def test_a_driver_that_writes_before_completing_passes() -> None:
    verifier = airp.Verifier()
    assert await read_one(verifier, LateWriter(None)) == b"x"
    verifier.check()
    assert 0xD5 not in verifier.statistics().violations


async def test_recorded_only_the_late_write_happens_and_is_reported() -> None:
    verifier = airp.Verifier(raise_on_violation=False)
    assert await read_one(verifier, LateWriter("information")) == b"x\x00\x00\x00"
    with pytest.raises(airp.VerificationFailed, match="wrote to an IRP after it completed"):
        verifier.check()


async def test_the_check_follows_the_drivers_and_checks_options() -> None:
    assert await read_one(airp.Verifier(drivers=["Other"]), LateWriter("information")) == b"x\x00\x00\x00"
    assert await read_one(airp.Verifier(checks=[0x228]), LateWriter("information")) == b"x\x00\x00\x00"
    with pytest.raises(airp.BugCheck):
        await read_one(airp.Verifier(checks=[0xD5]), LateWriter("information"))


# -- what the verifier holds -----------------------------------------------------------------


class Raiser(airp.Driver):
    """Reads raise; with ``pend`` the routine marks the IRP pending (hands it to nobody) first."""

    def __init__(self, pend: bool = False) -> None:
        super().__init__("Raiser")
        self.pend = pend
        self.seen: list[weakref.ref[airp.Irp]] = []

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLEANUP, IrpMajor.CLOSE)
    async def open_close(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        airp.complete_request(irp, airp.STATUS_SUCCESS, 0)
        return airp.STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        self.seen.append(weakref.ref(irp))
        if self.pend:
            irp.mark_pending()
        raise RuntimeError("the routine fails")


async def test_irps_whose_dispatch_routine_raised_are_not_kept() -> None:
    verifier = airp.Verifier()
    io = airp.IoManager(verifier=verifier)
    raiser = Raiser()
    io.create_device(raiser, NAME)
    async with io.open(NAME) as handle:
        for _ in range(20):
            with pytest.raises(RuntimeError, match="the routine fails"):
                await handle.read(1)
    gc.collect()
    assert len(raiser.seen) == 20
    assert [ref for ref in raiser.seen if ref() is not None] == []
    assert verifier.statistics().irps_tracked == 0
    verifier.check()


async def test_an_irp_nobody_completes_is_reported_even_when_nothing_else_holds_it() -> None:
    verifier = airp.Verifier()
    io = airp.IoManager(verifier=verifier)
    raiser = Raiser(pend=True)
    device = io.create_device(raiser, NAME)
    irp = io.new_traced_irp(device.stack_size)
    irp.next_stack_location.major = IrpMajor.READ
    with pytest.raises(RuntimeError):
        await airp.call_driver(device, irp)
    del irp
    gc.collect()
    assert verifier.statistics().irps_tracked == 1
    with pytest.raises(airp.VerificationFailed) as caught:
        verifier.check()
    [lost] = caught.value.outstanding
    assert lost.device is device
    assert "Raiser" in str(caught.value)
