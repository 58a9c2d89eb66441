"""The ``airp_verifier`` marker gives each run of a test its own state.

A marker's arguments are built once, at import, and shared by every run of the test: the asyncio
and the trio run.  A ``low_resources=`` simulation in them is copied afresh for each run, so the
trio run fails the same sites the asyncio run did instead of finding them already failed.
"""

from __future__ import annotations

import pytest

import airp
from airp import IrpMajor

pytestmark = pytest.mark.anyio


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


class Disk(airp.Driver):
    def __init__(self) -> None:
        super().__init__("Disk")

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLEANUP, IrpMajor.CLOSE, IrpMajor.READ, IrpMajor.DEVICE_CONTROL)
    async def io(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        airp.complete_request(irp, airp.STATUS_SUCCESS, 0)
        return airp.STATUS_SUCCESS


#: Built once, at import, as a marker's arguments are: shared by the asyncio and the trio run.
SYSTEMATIC = airp.LowResourcesSimulation(systematic=True)


@pytest.mark.airp_verifier(low_resources=SYSTEMATIC)
async def test_each_run_of_a_marked_test_gets_a_fresh_low_resources_simulation(airp_verifier: airp.Verifier) -> None:
    io = airp.IoManager(verifier=airp_verifier)
    disk = io.create_device(Disk(), "\\Device\\Disk")
    airp.attach_device(io.create_device(Allocating()), disk)
    async with io.open("\\Device\\Disk") as handle:
        # Systematic: the first allocation from the driver's call site fails, in *this* run too.
        with pytest.raises(airp.NtStatusError) as caught:
            await handle.device_control(0x222000)
        assert caught.value.status == airp.STATUS_INSUFFICIENT_RESOURCES
        await handle.device_control(0x222000)
    simulation = airp_verifier.low_resources
    assert simulation is not None
    assert simulation is not SYSTEMATIC
    assert simulation.systematic
    assert len(simulation.failures) == 1
    assert SYSTEMATIC.failures == ()
