"""The Verifier sends every newly started PnP stack an IRP it does not understand.

Windows' Driver Verifier (I/O verification) sends a new stack a PnP IRP with an undocumented minor,
so a driver that answers every minor it does not know (a classic: ``irp.status = STATUS_SUCCESS``
for anything) is caught without a test that sends such an IRP by hand.  airp's verifier does the
same just after IRP_MN_START_DEVICE succeeds: minor 0xFF, STATUS_NOT_SUPPORTED, from a task of its
own; 0x213 / 0x214 / 0x23B are recorded and fail ``check()``.
"""

from __future__ import annotations

import pytest

import airp
from airp import IrpMajor, PnpMinor, VerifierCode
from airp.testing import wait_until_quiet

pytestmark = pytest.mark.anyio


class Function(airp.Driver):
    """A function driver for a root-enumerated device.

    ``bug``: ``None`` handles PnP correctly (minors it does not handle go down untouched);
    ``"succeed-unknown"`` says STATUS_SUCCESS to every minor it does not handle and passes it down;
    ``"complete-unknown"`` completes those with STATUS_SUCCESS itself.
    """

    def __init__(self, bug: str | None = None) -> None:
        super().__init__("Function")
        self.bug = bug
        self.minors: list[int] = []

    def add_device(self, pdo: airp.DeviceObject) -> airp.DeviceObject:
        device = self.io.create_device(self)  # type: ignore[attr-defined]
        airp.attach_device(device, pdo)
        device.flags &= ~airp.DeviceFlags.DEVICE_INITIALIZING
        return device

    @airp.dispatch(IrpMajor.PNP)
    async def pnp(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        minor = irp.current_stack_location.minor
        self.minors.append(minor)
        lower = device.lower_device
        assert lower is not None
        if minor == PnpMinor.START_DEVICE:
            status, _ = await airp.forward_and_wait(lower, irp)
            airp.complete_request(irp, status, 0)
            return status
        if minor == PnpMinor.REMOVE_DEVICE:
            irp.status = airp.STATUS_SUCCESS
            status = await airp.pass_down(device, irp)
            airp.detach_device(lower)
            airp.delete_device(device)
            return status
        if minor in (PnpMinor.QUERY_REMOVE_DEVICE, PnpMinor.CANCEL_REMOVE_DEVICE, PnpMinor.SURPRISE_REMOVAL) or self.bug == "succeed-unknown":
            irp.status = airp.STATUS_SUCCESS
        elif self.bug == "complete-unknown":
            airp.complete_request(irp, airp.STATUS_SUCCESS, 0)
            return airp.STATUS_SUCCESS
        return await airp.pass_down(device, irp)


async def start(verifier: airp.Verifier, driver: Function) -> None:
    """Add and start a stack of *driver* on a root PDO, let the verifier's task run, remove it."""
    async with airp.IoManager(verifier=verifier) as io:
        driver.io = io  # type: ignore[attr-defined]
        node = await io.add_device("widget", function=driver)
        await io.start_device(node)
        await wait_until_quiet()


async def test_a_driver_that_passes_it_down_untouched_passes() -> None:
    verifier = airp.Verifier()
    driver = Function()
    await start(verifier, driver)
    assert 0xFF in driver.minors  # the verifier's IRP reached it
    assert driver.minors.index(0xFF) > driver.minors.index(PnpMinor.START_DEVICE)
    assert verifier.statistics().fake_irps_sent == 1
    verifier.check()


@pytest.mark.parametrize(
    ("bug", "code"),
    [
        ("succeed-unknown", VerifierCode.STATUS_CHANGED_NOT_UNDERSTOOD),
        ("complete-unknown", VerifierCode.COMPLETED_NOT_UNDERSTOOD),
    ],
)
async def test_a_driver_that_answers_a_minor_it_does_not_know_is_caught(bug: str, code: VerifierCode) -> None:
    verifier = airp.Verifier()
    await start(verifier, Function(bug))
    [violation] = verifier.violations
    assert violation.code == code
    assert violation.driver is not None
    assert violation.driver.name == "Function"
    assert violation.irp.stack_location(violation.irp.stack_count).minor == 0xFF
    with pytest.raises(airp.VerificationFailed, match=code.name):
        verifier.check()


async def test_without_fake_irps_the_same_bug_goes_unnoticed() -> None:
    verifier = airp.Verifier(fake_pnp_irps=False)
    driver = Function("succeed-unknown")
    await start(verifier, driver)
    assert 0xFF not in driver.minors
    assert verifier.statistics().fake_irps_sent == 0
    verifier.check()


async def test_a_stack_without_a_verified_driver_gets_none() -> None:
    verifier = airp.Verifier(drivers=["SomeoneElse"])
    driver = Function("succeed-unknown")
    await start(verifier, driver)
    assert 0xFF not in driver.minors
    verifier.check()


async def test_a_monitor_on_the_same_manager_sees_the_verifier_irp() -> None:
    monitor = airp.IrpMonitor(majors=[IrpMajor.PNP])
    verifier = airp.Verifier()
    driver = Function()
    async with airp.IoManager(verifier=verifier, monitor=monitor) as io:
        driver.io = io  # type: ignore[attr-defined]
        node = await io.add_device("widget", function=driver)
        await io.start_device(node)
        await wait_until_quiet()
    done = [r for r in monitor.records if r.event == "done" and r.status == airp.STATUS_NOT_SUPPORTED]
    assert done  # the 0xFF IRP came back STATUS_NOT_SUPPORTED
    verifier.check()


async def test_it_takes_the_node_s_turn_with_a_removal_right_after_the_start() -> None:
    """The fake IRP goes one at a time with the PnP manager's requests: a removal asked for at
    once, before anything else runs, neither overtakes it nor meets a half-removed stack."""
    verifier = airp.Verifier()
    driver = Function()
    async with airp.IoManager(verifier=verifier) as io:
        driver.io = io  # type: ignore[attr-defined]
        node = await io.add_device("widget", function=driver)
        await io.start_device(node)
        await io.remove_device(node)
        await wait_until_quiet()
    minors = driver.minors
    assert PnpMinor.REMOVE_DEVICE in minors
    if 0xFF in minors:  # sent before the removal, never after it
        assert minors.index(0xFF) < minors.index(PnpMinor.REMOVE_DEVICE)
    verifier.check()
