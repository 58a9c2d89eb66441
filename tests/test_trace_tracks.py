"""The IRP monitor and the Chrome trace tell devices apart by identity.

Two stacks of one driver have unnamed devices that share the driver's name.  Records, timings
and the trace's track groups used to be keyed by that name, so both stacks were merged into one
track.  Each device now has a number (``TraceRecord.device_id``) and a label unique in the
monitor: the first keeps the plain name, a later one gets a label that tells it apart.
"""

from __future__ import annotations

from typing import Any

import pytest

import airp
from airp import IrpMajor

pytestmark = pytest.mark.anyio


class Disk(airp.Driver):
    def __init__(self) -> None:
        super().__init__("Disk")

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLEANUP, IrpMajor.CLOSE, IrpMajor.READ)
    async def io(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        airp.complete_request(irp, airp.STATUS_SUCCESS, 0)
        return airp.STATUS_SUCCESS


def on_done(device: airp.DeviceObject | None, irp: airp.Irp, context: Any) -> int:
    if irp.pending_returned:
        irp.mark_pending()
    return airp.STATUS_CONTINUE_COMPLETION


class Filter(airp.Driver):
    """One filter driver; its devices have no name."""

    pass_through = True

    def __init__(self) -> None:
        super().__init__("Filter")

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        irp.copy_current_stack_location_to_next()
        irp.set_completion_routine(on_done)
        assert device.lower_device is not None
        return await airp.call_driver(device.lower_device, irp)


async def two_stacks(monitor: airp.IrpMonitor) -> None:
    """Disks A and B, each under an unnamed device of the one Filter driver; a read through each."""
    io = airp.IoManager(monitor=monitor)
    disk, filt = Disk(), Filter()
    for name in ("\\Device\\A", "\\Device\\B"):
        airp.attach_device(io.create_device(filt), io.create_device(disk, name))
    for name in ("\\Device\\A", "\\Device\\B"):
        async with io.open(name) as handle:
            await handle.read(1)


async def test_records_tell_two_unnamed_devices_of_one_driver_apart() -> None:
    monitor = airp.IrpMonitor(majors=[IrpMajor.READ])
    await two_stacks(monitor)
    filtered = [r for r in monitor.records if r.driver == "Filter"]
    labels = {r.device_id: r.device for r in filtered}
    assert len(labels) == 2  # two devices, not one
    assert len(set(labels.values())) == 2
    first_label, second_label = (labels[k] for k in sorted(labels))
    assert first_label == "Filter"  # the first keeps its name
    assert second_label is not None
    assert second_label != "Filter"
    assert "Filter" in second_label
    # Each record of one IRP names one filter device.
    for irp in {r.irp for r in filtered}:
        assert len({r.device_id for r in filtered if r.irp == irp}) == 1
    timings = monitor.timings()
    assert timings["Filter"].irps == 1
    assert timings[second_label].irps == 1


async def test_the_chrome_trace_has_one_track_group_per_device() -> None:
    monitor = airp.IrpMonitor(majors=[IrpMajor.READ])
    await two_stacks(monitor)
    trace = airp.chrome_trace(monitor)
    groups = [e["args"]["name"] for e in trace["traceEvents"] if e.get("name") == "process_name"]
    # Two disks (named) and two filter devices (unnamed, one driver): four groups.
    assert len(groups) == 4
    assert len(set(groups)) == 4
    filter_pids = {e["pid"] for e in trace["traceEvents"] if e.get("ph") == "X" and e["args"].get("driver") == "Filter"}
    assert len(filter_pids) == 2


async def test_a_device_object_filter_keeps_that_device_only() -> None:
    """``devices=`` given a device object keeps that device, not every device of its name."""
    disk, filt = Disk(), Filter()
    uppers = []
    for _ in range(2):
        upper = airp.DeviceObject(filt)
        airp.attach_device(upper, airp.DeviceObject(disk))
        uppers.append(upper)
    monitor = airp.IrpMonitor(devices=[uppers[0]])
    sent = []
    for upper in uppers:
        irp = monitor.watch(airp.Irp(upper.stack_size))
        irp.next_stack_location.major = IrpMajor.READ
        await airp.call_driver(upper, irp)
        assert (await irp).status == airp.STATUS_SUCCESS
        sent.append(irp._trace_id)
    kept = {r.irp for r in monitor.records if r.device is not None}
    assert kept == {sent[0]}
