"""The opt-in Driver Verifier (issue 13, reference 10.3 and 10.4): one test per check with a buggy
driver that triggers it and the correct version that passes; the drivers it verifies; forced
pending (seeded, and breaking a driver that assumes synchronous completion); low resources; IRP
tracking; and a Hypothesis run of correct stacks under forced pending."""

from __future__ import annotations

from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import airp
from airp import IrpMajor, PnpMinor, VerifierCode
from airp.testing import virtual_anyio_backend

pytestmark = pytest.mark.anyio

NAME = "\\Device\\Disk"


class Disk(airp.Driver):
    """Completes every request at once: reads with 4 bytes, PnP/power/WMI with what they carry."""

    def __init__(self, returned: int | None = None) -> None:
        super().__init__("Disk")
        self.returned = returned

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLEANUP, IrpMajor.CLOSE, IrpMajor.READ, IrpMajor.DEVICE_CONTROL)
    async def io(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        airp.complete_request(irp, airp.STATUS_SUCCESS, 4)
        return self.returned if self.returned is not None else airp.STATUS_SUCCESS


class SlowDisk(airp.Driver):
    """Pends every read and completes it from another task after a virtual second."""

    def __init__(self, tg: anyio.abc.TaskGroup) -> None:
        super().__init__("SlowDisk")
        self.tg = tg

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLEANUP, IrpMajor.CLOSE)
    async def open_close(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        airp.complete_request(irp, airp.STATUS_SUCCESS, 0)
        return airp.STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        irp.mark_pending()

        async def later() -> None:
            await anyio.sleep(1)
            airp.complete_request(irp, airp.STATUS_SUCCESS, 4)

        self.tg.start_soon(later)
        return airp.STATUS_PENDING


def build(verifier: airp.Verifier, *filters: airp.Driver, bottom: airp.Driver | None = None) -> airp.IoManager:
    io = airp.IoManager(verifier=verifier)
    below = io.create_device(bottom if bottom is not None else Disk(), NAME)
    for driver in filters:
        below = airp.attach_device(io.create_device(driver), below)
    return io


async def read(io: airp.IoManager) -> bytes:
    async with io.open(NAME) as handle:
        return await handle.read(4)


def codes(verifier: airp.Verifier) -> list[int]:
    return [int(v.code) for v in verifier.violations]


def hand_back(device: airp.DeviceObject | None, irp: airp.Irp, context: Any) -> int:
    return airp.STATUS_MORE_PROCESSING_REQUIRED


# -- 0x228 -------------------------------------------------------------------------------------


def forgetful_routine(device: airp.DeviceObject | None, irp: airp.Irp, context: Any) -> int:
    return airp.STATUS_CONTINUE_COMPLETION


def propagating_routine(device: airp.DeviceObject | None, irp: airp.Irp, context: Any) -> int:
    if irp.pending_returned:
        irp.mark_pending()
    return airp.STATUS_CONTINUE_COMPLETION


class RoutineFilter(airp.Driver):
    pass_through = True

    def __init__(self, routine: Any, name: str = "RoutineFilter") -> None:
        super().__init__(name)
        self.routine = routine

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        assert device.lower_device is not None
        irp.copy_current_stack_location_to_next()
        irp.set_completion_routine(self.routine)
        return await airp.call_driver(device.lower_device, irp)


async def test_0x228_a_routine_that_drops_the_pending_mark_is_named() -> None:
    verifier = airp.Verifier(force_pending=True, raise_on_violation=False)
    io = build(verifier, RoutineFilter(forgetful_routine))
    with pytest.raises(airp.BugCheck):
        await read(io)  # the always-on check at the top fails the request too
    assert VerifierCode.PENDING_NOT_PROPAGATED in codes(verifier)
    violation = verifier.violations[0]
    assert violation.driver is not None
    assert violation.driver.name == "RoutineFilter"
    assert "forgetful_routine" in violation.message
    assert violation.parameters[0] == 0x228


async def test_0x228_a_routine_that_propagates_passes() -> None:
    verifier = airp.Verifier(force_pending=True)
    io = build(verifier, RoutineFilter(propagating_routine))
    assert await read(io) == bytes(4)
    verifier.check()
    assert verifier.statistics().forced_pendings >= 1


# -- 0x21C -------------------------------------------------------------------------------------


class CopyingFilter(airp.Driver):
    pass_through = True

    def __init__(self, skip: bool = False) -> None:
        super().__init__("CopyingFilter")
        self.skip = skip

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        assert device.lower_device is not None
        if self.skip:
            return await airp.pass_down(device, irp)
        irp.copy_current_stack_location_to_next()
        return await airp.call_driver(device.lower_device, irp)


async def test_0x21c_copied_without_a_routine() -> None:
    verifier = airp.Verifier()
    io = build(verifier, CopyingFilter())
    with pytest.raises(airp.BugCheck) as caught:
        await read(io)
    assert caught.value.verifier_code == VerifierCode.COPIED_WITHOUT_ROUTINE
    assert caught.value.driver is not None
    assert caught.value.driver.name == "CopyingFilter"


async def test_0x21c_skipping_passes() -> None:
    verifier = airp.Verifier(force_pending=True)
    io = build(verifier, CopyingFilter(skip=True), CopyingFilter(skip=True))
    assert await read(io) == bytes(4)
    verifier.check()


# -- 0x224 -------------------------------------------------------------------------------------


async def test_0x224_a_lower_dispatch_routine_returning_another_status() -> None:
    verifier = airp.Verifier()
    io = build(verifier, RoutineFilter(propagating_routine), bottom=Disk(returned=airp.STATUS_UNSUCCESSFUL))
    with pytest.raises(airp.BugCheck) as caught:
        await read(io)
    assert caught.value.verifier_code == VerifierCode.DISPATCH_STATUS_MISMATCH
    assert caught.value.driver is not None
    assert caught.value.driver.name == "Disk"
    assert caught.value.parameters[2] == airp.STATUS_UNSUCCESSFUL


async def test_0x224_consistent_statuses_pass_at_every_layer() -> None:
    verifier = airp.Verifier(force_pending=0.5, seed=1)
    io = build(verifier, RoutineFilter(propagating_routine), Impatient("wait"), CopyingFilter(skip=True))
    for _ in range(4):
        assert await read(io) == bytes(4)
    verifier.check()
    assert verifier.statistics().checks_run[VerifierCode.DISPATCH_STATUS_MISMATCH] >= 8


# -- PnP, power and WMI status rules -------------------------------------------------------------


class PnpFilter(airp.Driver):
    """Handles PnP, power and WMI with a routine of its own that does what it is told."""

    pass_through = True

    def __init__(self, action: str, name: str = "PnpFilter") -> None:
        super().__init__(name)
        self.action = action

    @airp.dispatch(IrpMajor.PNP, IrpMajor.POWER, IrpMajor.SYSTEM_CONTROL)
    async def pnp(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        if self.action == "set-status":
            irp.status = airp.STATUS_SUCCESS
        elif self.action == "set-information":
            irp.information = 7
        elif self.action == "fail":
            irp.status = airp.STATUS_UNSUCCESSFUL
        elif self.action == "not-supported":
            irp.status = airp.STATUS_NOT_SUPPORTED
        elif self.action == "complete":
            airp.complete_request(irp, airp.STATUS_SUCCESS, 0)
            return airp.STATUS_SUCCESS
        return await airp.pass_down(device, irp)


async def send_pnp(
    io: airp.IoManager, major: int, minor: int, status: int = airp.STATUS_NOT_SUPPORTED
) -> airp.IoStatus:
    top = airp.get_attached_device(io.get_device(NAME))
    irp = io.new_traced_irp(top.stack_size)
    loc = irp.next_stack_location
    loc.major = major
    loc.minor = minor
    irp.status = status
    await airp.call_driver(top, irp)
    return await irp


@pytest.mark.parametrize(
    ("action", "code"),
    [
        ("set-status", VerifierCode.STATUS_CHANGED_NOT_UNDERSTOOD),
        ("set-information", VerifierCode.INFORMATION_CHANGED_NOT_UNDERSTOOD),
        ("complete", VerifierCode.COMPLETED_NOT_UNDERSTOOD),
    ],
)
async def test_0x213_0x214_0x23b_an_irp_it_does_not_understand(action: str, code: VerifierCode) -> None:
    verifier = airp.Verifier()
    io = build(verifier, PnpFilter(action))
    with pytest.raises(airp.BugCheck) as caught:
        await send_pnp(io, IrpMajor.PNP, 0xFF)  # an undocumented minor: nobody understands it
    assert caught.value.verifier_code == code
    assert caught.value.driver is not None
    assert caught.value.driver.name == "PnpFilter"


async def test_an_understood_minor_may_be_changed_and_a_declared_one_too() -> None:
    verifier = airp.Verifier()
    io = build(verifier, PnpFilter("set-status"))
    assert (await send_pnp(io, IrpMajor.PNP, PnpMinor.QUERY_CAPABILITIES)).status == airp.STATUS_SUCCESS
    declaring = PnpFilter("set-status")
    declaring.understood_minors = {IrpMajor.PNP: {0xFF}}  # type: ignore[attr-defined]
    io = build(verifier, declaring)
    assert (await send_pnp(io, IrpMajor.PNP, 0xFF)).status == airp.STATUS_SUCCESS
    verifier.check()


async def test_an_irp_it_does_not_understand_passed_down_untouched_passes() -> None:
    verifier = airp.Verifier()
    io = build(verifier, PnpFilter("nothing"), CopyingFilter(skip=True))
    result = await send_pnp(io, IrpMajor.PNP, 0xFF)
    assert result.status == airp.STATUS_NOT_SUPPORTED
    verifier.check()


@pytest.mark.parametrize(
    ("major", "code"),
    [(IrpMajor.PNP, VerifierCode.FAILED_PNP_PASSED_DOWN), (IrpMajor.POWER, VerifierCode.FAILED_POWER_PASSED_DOWN)],
)
async def test_0x215_0x219_failed_and_passed_down(major: int, code: VerifierCode) -> None:
    verifier = airp.Verifier()
    io = build(verifier, PnpFilter("fail"))
    with pytest.raises(airp.BugCheck) as caught:
        await send_pnp(io, major, 2)  # REMOVE_DEVICE / SET_POWER: understood
    assert caught.value.verifier_code == code


async def test_0x215_failing_by_completing_passes() -> None:
    class Refuser(airp.Driver):
        pass_through = True

        @airp.dispatch(IrpMajor.PNP)
        async def pnp(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
            airp.complete_request(irp, airp.STATUS_UNSUCCESSFUL, 0)
            return airp.STATUS_UNSUCCESSFUL

    verifier = airp.Verifier()
    io = build(verifier, Refuser())
    assert (await send_pnp(io, IrpMajor.PNP, PnpMinor.QUERY_REMOVE_DEVICE)).status == airp.STATUS_UNSUCCESSFUL
    verifier.check()


async def test_0x216_previous_status_overwritten_with_not_supported() -> None:
    verifier = airp.Verifier()
    io = build(verifier, PnpFilter("not-supported"))
    with pytest.raises(airp.BugCheck) as caught:
        await send_pnp(io, IrpMajor.PNP, PnpMinor.START_DEVICE, status=airp.STATUS_SUCCESS)
    assert caught.value.verifier_code == VerifierCode.STATUS_OVERWRITTEN_NOT_SUPPORTED
    verifier = airp.Verifier()
    io = build(verifier, PnpFilter("nothing"))
    assert (await send_pnp(io, IrpMajor.PNP, PnpMinor.START_DEVICE, status=airp.STATUS_SUCCESS)).status == 0
    verifier.check()


class OwnIrpSender(airp.Driver):
    """On a device control, sends its own PnP/power/WMI IRP to the device below."""

    pass_through = True

    def __init__(self, major: int, initialise: bool) -> None:
        super().__init__("OwnIrpSender")
        self.major = major
        self.initialise = initialise

    @airp.dispatch(IrpMajor.DEVICE_CONTROL)
    async def control(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        lower = device.lower_device
        assert lower is not None
        own = airp.allocate_irp(lower.stack_size)
        assert own is not None
        loc = own.next_stack_location
        loc.major = self.major
        loc.minor = 0x09 if self.major == IrpMajor.PNP else 0x03
        if self.initialise:
            own.status = airp.STATUS_NOT_SUPPORTED
        try:
            await airp.call_driver_and_wait(lower, own)
        finally:
            if own.current_location == own.stack_count + 1:
                airp.free_irp(own)
        airp.complete_request(irp, airp.STATUS_SUCCESS, 0)
        return airp.STATUS_SUCCESS


@pytest.mark.parametrize(
    ("major", "code"),
    [
        (IrpMajor.PNP, VerifierCode.PNP_IRP_NOT_INITIALIZED),
        (IrpMajor.POWER, VerifierCode.POWER_IRP_NOT_INITIALIZED),
        (IrpMajor.SYSTEM_CONTROL, VerifierCode.WMI_IRP_NOT_INITIALIZED),
    ],
)
async def test_0x20e_0x20f_0x210_a_driver_built_irp_not_initialised(major: int, code: VerifierCode) -> None:
    verifier = airp.Verifier()
    io = build(verifier, OwnIrpSender(major, initialise=False))
    async with io.open(NAME) as handle:
        with pytest.raises(airp.BugCheck) as caught:
            await handle.device_control(0x222000)
    assert caught.value.verifier_code == code
    assert caught.value.driver is not None
    assert caught.value.driver.name == "OwnIrpSender"
    verifier = airp.Verifier(force_pending=True)
    io = build(verifier, OwnIrpSender(major, initialise=True))
    async with io.open(NAME) as handle:
        await handle.device_control(0x222000)
    verifier.check()


# -- 0x205, 0x209: an IRP still queued below -------------------------------------------------------


class QueueDisk(airp.Driver):
    """Queues reads in a StartIo lane (no cancel routine), completing each after a second."""

    def __init__(self) -> None:
        super().__init__("QueueDisk")
        self.lane: airp.StartIoQueue | None = None

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLEANUP, IrpMajor.CLOSE)
    async def open_close(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        airp.complete_request(irp, airp.STATUS_SUCCESS, 0)
        return airp.STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        assert self.lane is not None
        return self.lane.start_packet(irp, cancel_routine=None)

    async def start_io(self, device: airp.DeviceObject, irp: airp.Irp) -> None:
        await anyio.sleep(1)
        airp.complete_request(irp, airp.STATUS_SUCCESS, 4)


class Impatient(airp.Driver):
    """After STATUS_PENDING, completes the IRP itself or sends it again (both wrong)."""

    pass_through = True

    def __init__(self, what: str) -> None:
        super().__init__("Impatient")
        self.what = what

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        lower = device.lower_device
        assert lower is not None
        irp.copy_current_stack_location_to_next()
        irp.set_completion_routine(propagating_routine)
        status = await airp.call_driver(lower, irp)
        if status == airp.STATUS_PENDING and self.what == "complete":
            airp.complete_request(irp, airp.STATUS_SUCCESS, 0)
        elif status == airp.STATUS_PENDING and self.what == "send":
            await airp.call_driver(lower, irp)
        return status


@pytest.mark.parametrize(
    ("what", "code"), [("send", VerifierCode.FORWARD_QUEUED_IRP), ("complete", VerifierCode.COMPLETE_QUEUED_IRP)]
)
async def test_0x205_0x209_an_irp_still_queued_below(what: str, code: VerifierCode) -> None:
    verifier = airp.Verifier()
    disk = QueueDisk()
    io = airp.IoManager(verifier=verifier)
    # A device below the queue, so that the impatient re-send finds a location to go to.
    bottom = airp.attach_device(io.create_device(disk), io.create_device(Disk(), NAME))
    airp.attach_device(io.create_device(Impatient(what)), bottom)
    async with airp.run_device(bottom):
        disk.lane = airp.StartIoQueue(bottom, "lane", disk.start_io)
        async with io.open(NAME) as handle:
            with pytest.raises(airp.BugCheck) as caught:
                await handle.read(4)
            await anyio.sleep(2)  # the lane still finishes the IRP: nothing was stranded
    assert caught.value.verifier_code == code
    assert caught.value.driver is not None
    assert caught.value.driver.name == "Impatient"
    assert verifier.outstanding() == []


async def test_0x205_0x209_waiting_for_the_queue_passes() -> None:
    verifier = airp.Verifier()
    disk = QueueDisk()
    io = build(verifier, Impatient("wait"), bottom=disk)
    bottom = io.get_device(NAME)
    async with airp.run_device(bottom):
        disk.lane = airp.StartIoQueue(bottom, "lane", disk.start_io)
        assert await read(io) == bytes(4)
    verifier.check()


# -- 0x239 ---------------------------------------------------------------------------------------


class Shortcut(airp.Driver):
    """Allocates an IRP of its own and, wrongly, completes it instead of sending it."""

    pass_through = True

    def __init__(self, send: bool) -> None:
        super().__init__("Shortcut")
        self.send = send

    @airp.dispatch(IrpMajor.DEVICE_CONTROL)
    async def control(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        lower = device.lower_device
        assert lower is not None
        own = airp.allocate_irp(lower.stack_size)
        assert own is not None
        own.next_stack_location.major = IrpMajor.READ
        if self.send:
            await airp.call_driver_and_wait(lower, own)
        else:
            airp.complete_request(own, airp.STATUS_SUCCESS, 0)
        airp.free_irp(own)
        airp.complete_request(irp, airp.STATUS_SUCCESS, 0)
        return airp.STATUS_SUCCESS


async def test_0x239_completing_an_irp_never_sent() -> None:
    verifier = airp.Verifier()
    io = build(verifier, Shortcut(send=False))
    async with io.open(NAME) as handle:
        with pytest.raises(airp.BugCheck) as caught:
            await handle.device_control(0x222000)
    assert caught.value.verifier_code == VerifierCode.COMPLETE_NEVER_SENT
    assert caught.value.driver is not None
    assert caught.value.driver.name == "Shortcut"
    verifier = airp.Verifier()
    io = build(verifier, Shortcut(send=True))
    async with io.open(NAME) as handle:
        await handle.device_control(0x222000)
    verifier.check()


# -- 0x307 ---------------------------------------------------------------------------------------


async def test_0x307_going_on_after_forced_pending() -> None:
    verifier = airp.Verifier(force_pending=True)
    io = build(verifier, Impatient("complete"))
    with pytest.raises(airp.BugCheck) as caught:
        await read(io)
    assert caught.value.verifier_code == VerifierCode.WAIT_ON_SIGNALLED_EVENT
    assert caught.value.driver is not None
    assert caught.value.driver.name == "Impatient"
    await anyio.lowlevel.checkpoint()
    assert verifier.outstanding() == []  # the deferred completion still ran


async def test_0x307_going_on_after_a_real_pending() -> None:
    verifier = airp.Verifier()
    async with anyio.create_task_group() as tg:
        io = build(verifier, Impatient("complete"), bottom=SlowDisk(tg))
        with pytest.raises(airp.BugCheck) as caught:
            await read(io)
    assert caught.value.verifier_code == VerifierCode.WAIT_ON_SIGNALLED_EVENT


async def test_0x307_waiting_passes_under_forced_pending() -> None:
    verifier = airp.Verifier(force_pending=True)
    io = build(verifier, Impatient("wait"))
    assert await read(io) == bytes(4)
    verifier.check()


# -- which drivers are verified --------------------------------------------------------------------


async def test_only_the_named_drivers_are_verified() -> None:
    other = airp.Verifier(drivers=["Disk"])
    assert await read(build(other, CopyingFilter())) == bytes(4)
    assert other.violations == []
    assert other.statistics().checks_run.get(VerifierCode.COPIED_WITHOUT_ROUTINE) is None
    by_name = airp.Verifier(drivers=["CopyingFilter"])
    with pytest.raises(airp.BugCheck):
        await read(build(by_name, CopyingFilter()))
    buggy = CopyingFilter()
    by_object = airp.Verifier(drivers=[buggy], raise_on_violation=False)
    assert await read(build(by_object, buggy)) == bytes(4)
    assert codes(by_object) == [VerifierCode.COPIED_WITHOUT_ROUTINE]
    assert by_object.verifies(buggy)
    assert not by_object.verifies(CopyingFilter())
    assert not by_object.verifies(None)


def test_bad_options_are_refused_with_what_was_expected() -> None:
    with pytest.raises(ValueError, match="0x21c"):
        airp.Verifier(checks=[0x999])
    with pytest.raises(ValueError, match=r"between 0\.0"):
        airp.Verifier(force_pending=1.5)
    with pytest.raises(TypeError, match="seed must be an int"):
        airp.Verifier(seed="x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"driver names or airp\.Driver"):
        airp.Verifier(drivers=[3])  # type: ignore[list-item]


async def test_checks_can_be_chosen() -> None:
    verifier = airp.Verifier(checks=[VerifierCode.PENDING_NOT_PROPAGATED])
    assert await read(build(verifier, CopyingFilter())) == bytes(4)
    verifier.check()


# -- forced pending --------------------------------------------------------------------------------


async def forced_sequence(seed: int) -> list[int]:
    verifier = airp.Verifier(force_pending=0.5, seed=seed)
    io = build(
        verifier, RoutineFilter(propagating_routine), CopyingFilter(skip=True), RoutineFilter(propagating_routine)
    )
    forced = []
    async with io.open(NAME) as handle:
        for _ in range(20):
            before = verifier.statistics().forced_pendings
            assert await handle.read(4) == bytes(4)
            forced.append(verifier.statistics().forced_pendings - before)
    verifier.check()
    return forced


async def test_force_pending_is_reproducible_by_seed() -> None:
    first = await forced_sequence(7)
    assert first == await forced_sequence(7)
    assert 0 < sum(first) < 3 * 20
    assert any([first != await forced_sequence(seed) for seed in (8, 9, 10)])


async def test_forced_pending_returns_pending_and_completes_later_with_the_pending_mark() -> None:
    seen: list[bool] = []

    def watcher(device: airp.DeviceObject | None, irp: airp.Irp, context: Any) -> int:
        seen.append(irp.pending_returned)
        return propagating_routine(device, irp, context)

    returned: list[int] = []

    class Probe(RoutineFilter):
        async def read(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
            status = await super().read(device, irp)
            returned.append(status)
            return status

    verifier = airp.Verifier(force_pending=True)
    io = build(verifier, Probe(watcher))
    assert await read(io) == bytes(4)
    assert returned == [airp.STATUS_PENDING]
    assert seen == [True]
    without = airp.Verifier()
    returned.clear()
    seen.clear()
    assert await read(build(without, Probe(watcher))) == bytes(4)
    assert returned == [airp.STATUS_SUCCESS]
    assert seen == [False]


# -- low resources ---------------------------------------------------------------------------------


class Allocating(airp.Driver):
    """Serves each device control with an IRP of its own from its allocator."""

    pass_through = True

    def __init__(self) -> None:
        super().__init__("Allocating")
        self.allocator = airp.IrpAllocator(owner=self)

    @airp.dispatch(IrpMajor.DEVICE_CONTROL)
    async def control(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        lower = device.lower_device
        assert lower is not None
        own = self.allocator.allocate_irp(lower.stack_size)
        if own is None:
            airp.complete_request(irp, airp.STATUS_INSUFFICIENT_RESOURCES, 0)
            return airp.STATUS_INSUFFICIENT_RESOURCES
        own.next_stack_location.major = IrpMajor.READ
        await airp.call_driver_and_wait(lower, own)
        airp.free_irp(own)
        airp.complete_request(irp, airp.STATUS_SUCCESS, 0)
        return airp.STATUS_SUCCESS


@pytest.mark.parametrize("systematic", [False, True])
async def test_low_resources_through_the_verifier(systematic: bool) -> None:
    simulation = airp.LowResourcesSimulation(fraction=1.0, seed=3, systematic=systematic)
    verifier = airp.Verifier(low_resources=simulation, force_pending=True)
    driver = Allocating()
    io = build(verifier, driver)
    async with io.open(NAME) as handle:
        with pytest.raises(airp.NtStatusError) as caught:
            await handle.device_control(0x222000)
        assert caught.value.status == airp.STATUS_INSUFFICIENT_RESOURCES
        if systematic:
            await handle.device_control(0x222000)  # that call site has failed once: now it works
    assert driver.allocator.low_resources is simulation
    stats = verifier.statistics()
    assert stats.allocation_failures == 1
    assert stats.allocation_attempts == (2 if systematic else 1)
    verifier.check()


async def test_cover_installs_the_simulation_and_watches() -> None:
    simulation = airp.LowResourcesSimulation(fraction=0.0)
    verifier = airp.Verifier(low_resources=simulation)
    allocator = airp.IrpAllocator()
    verifier.cover(allocator)
    assert allocator.low_resources is simulation
    assert allocator.monitor is verifier
    with pytest.raises(TypeError, match="IrpAllocator"):
        verifier.cover(object())  # type: ignore[arg-type]


# -- IRP tracking ----------------------------------------------------------------------------------


class Hoarder(airp.Driver):
    """Pends reads and keeps them until told to complete them."""

    def __init__(self) -> None:
        super().__init__("Hoarder")
        self.held: list[airp.Irp] = []

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLEANUP, IrpMajor.CLOSE)
    async def open_close(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        airp.complete_request(irp, airp.STATUS_SUCCESS, 0)
        return airp.STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        irp.mark_pending()
        self.held.append(irp)
        return airp.STATUS_PENDING


async def test_tracking_reports_the_holder_and_how_long() -> None:
    verifier = airp.Verifier()
    hoarder = Hoarder()
    io = build(verifier, bottom=hoarder)
    async with io.open(NAME) as handle:
        request = await handle.read_overlapped(4)
        await anyio.sleep(5)
        (left,) = verifier.outstanding()
        assert left.irp is request.irp
        assert left.driver is hoarder
        assert left.device is io.get_device(NAME)
        assert left.held_for == pytest.approx(5.0)
        assert left.major == IrpMajor.READ
        assert not left.deferred
        with pytest.raises(airp.VerificationFailed) as caught:
            verifier.check()
        assert "Hoarder" in str(caught.value)
        assert "outstanding" in str(caught.value)
        assert caught.value.outstanding == [left]
        assert verifier.statistics().outstanding == 1
        airp.complete_request(hoarder.held.pop(), airp.STATUS_SUCCESS, 0)
        await request
    verifier.check()
    assert verifier.statistics().outstanding == 0


def test_a_clock_can_be_given() -> None:
    now = [10.0]
    verifier = airp.Verifier(clock=lambda: now[0])
    assert verifier.outstanding() == []
    assert "all drivers" in repr(verifier)


# -- correct stacks under forced pending (Hypothesis) --------------------------------------------


def correct_filter(kind: str, number: int) -> airp.Driver:
    if kind == "skip":
        driver: airp.Driver = CopyingFilter(skip=True)
    elif kind == "routine":
        driver = RoutineFilter(propagating_routine)
    else:
        driver = Impatient("wait")
    driver.name = f"{kind}{number}"
    return driver


async def run_stack(kinds: list[str], slow: bool, seed: int, reads: int) -> tuple[airp.Verifier, list[airp.Irp]]:
    verifier = airp.Verifier(force_pending=0.5, seed=seed)
    irps: list[airp.Irp] = []
    async with anyio.create_task_group() as tg:
        bottom = SlowDisk(tg) if slow else Disk()
        io = build(verifier, *(correct_filter(kind, i) for i, kind in enumerate(kinds)), bottom=bottom)
        async with io.open(NAME) as handle:
            for _ in range(reads):
                request = await handle.read_overlapped(4)
                irps.append(request.irp)
                assert await request == bytes(4)
    return verifier, irps


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kinds=st.lists(st.sampled_from(["skip", "routine", "wait"]), min_size=1, max_size=4),
    slow=st.booleans(),
    seed=st.integers(0, 2**32),
    reads=st.integers(1, 4),
)
def test_correct_stacks_under_forced_pending_never_violate(
    backend: str, kinds: list[str], slow: bool, seed: int, reads: int
) -> None:
    name, options = virtual_anyio_backend(backend)
    verifier, irps = anyio.run(run_stack, kinds, slow, seed, reads, backend=name, backend_options=options)
    assert verifier.violations == []
    assert verifier.errors == []
    assert verifier.outstanding() == []
    assert all(irp.completed for irp in irps)
    assert len(irps) == reads
    verifier.check()


# -- the pytest fixture and marker, and the worked example of docs/testing.md ----------------------

DOCS = __import__("pathlib").Path(__file__).resolve().parent.parent / "docs" / "testing.md"
CONFTEST = """
import pytest

@pytest.fixture
def anyio_backend(airp_anyio_backend):
    return airp_anyio_backend
"""


def example_blocks() -> list[str]:
    text = DOCS.read_text()
    section = text[text.index("### A driver that assumes synchronous completion") :]
    blocks = section.split("```python\n")[1:]
    return [block.split("```")[0] for block in blocks]


def test_the_docs_example_has_three_blocks() -> None:
    blocks = example_blocks()
    assert len(blocks) == 3
    assert "BUG" in blocks[1]
    assert "forward_and_wait" in blocks[2]


def test_the_docs_example_catches_the_driver_and_passes_its_fix(pytester: pytest.Pytester) -> None:
    stack, buggy, fixed = example_blocks()
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_buggy=stack + buggy, test_fixed=stack + fixed)
    result = pytester.runpytest("-p", "no:cacheprovider", "test_buggy.py")
    result.assert_outcomes(failed=2, errors=2)
    result.stdout.fnmatch_lines(["*Driver Verifier:*", "*held by*Checksum*", "*COMPLETE_WITH_PENDING_STATUS*"])
    pytester.runpytest("-p", "no:cacheprovider", "test_fixed.py").assert_outcomes(passed=2)
    # The same buggy driver passes when nothing forces pending: why the verifier is worth having.
    pytester.makepyfile(test_unforced=(stack + buggy).replace("force_pending=True", "force_pending=False"))
    pytester.runpytest("-p", "no:cacheprovider", "test_unforced.py").assert_outcomes(passed=2)


def test_the_fixture_fails_a_test_at_teardown_on_a_recorded_violation(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(
        """
        import airp
        import pytest

        class Disk(airp.Driver):
            @airp.dispatch(airp.IrpMajor.CREATE, airp.IrpMajor.CLEANUP, airp.IrpMajor.CLOSE, airp.IrpMajor.READ)
            async def io(self, device, irp):
                airp.complete_request(irp, airp.STATUS_SUCCESS, 0)
                return airp.STATUS_SUCCESS

        class Copier(airp.Driver):
            pass_through = True

            @airp.dispatch(airp.IrpMajor.READ)
            async def read(self, device, irp):
                irp.copy_current_stack_location_to_next()
                return await airp.call_driver(device.lower_device, irp)

        async def read_through(verifier, driver):
            io = airp.IoManager(verifier=verifier)
            disk = io.create_device(Disk(), "\\\\Device\\\\Disk")
            airp.attach_device(io.create_device(driver), disk)
            async with io.open("\\\\Device\\\\Disk") as handle:
                await handle.read(0)

        @pytest.mark.anyio
        @pytest.mark.airp_verifier(raise_on_violation=False)
        async def test_copier(airp_verifier):
            await read_through(airp_verifier, Copier())

        @pytest.mark.anyio
        @pytest.mark.airp_verifier(raise_on_violation=False, drivers=["Disk"])
        async def test_copier_not_verified(airp_verifier):
            await read_through(airp_verifier, Copier())

        @pytest.mark.anyio
        async def test_defaults(airp_verifier):
            assert airp_verifier.force_pending == 0.0
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "--strict-markers")
    result.assert_outcomes(passed=6, errors=2)
    result.stdout.fnmatch_lines(["*COPIED_WITHOUT_ROUTINE*Copier*"])


def test_the_marker_refuses_bad_options(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.airp_verifier(bogus=1)
        def test_bad(airp_verifier):
            pass

        @pytest.mark.airp_verifier(0.5)
        def test_positional(airp_verifier):
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines(["*bogus*", "*keyword arguments only*"])
