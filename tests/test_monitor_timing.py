"""The IRP monitor of issue 13: time on the run's clock, per-layer spans and queue waits, filters,
per-device rings, and the records of cancels, driver-allocated IRPs, links, frees and reuses.

Every async test runs on asyncio and trio, each on a fresh virtual clock: a 1.0 s device latency
comes out as exactly 1.0 s of virtual time.
"""

from __future__ import annotations

import math
from typing import Any

import anyio
import pytest
from _trace_drivers import LATENCY, Splitter, build

import airp
from airp import (
    STATUS_END_OF_FILE,
    STATUS_PENDING,
    STATUS_SUCCESS,
    Irp,
    IrpMajor,
    IrpMonitor,
    NtStatusError,
    ReadWriteParameters,
    TraceRecord,
    attach_device,
    complete_request,
)
from airp.testing import VirtualClock

pytestmark = pytest.mark.anyio


def events(records: list[TraceRecord]) -> list[tuple[str, str | None, float]]:
    return [(r.event, r.device, r.time) for r in records]


# -- time and spans ---------------------------------------------------------------------------------------


async def test_records_carry_virtual_time_and_a_layer_span_lasts_the_device_latency(virtual_clock: VirtualClock) -> None:
    monitor = IrpMonitor()
    io, bottom, _ = build(monitor)
    async with airp.run_device(bottom), io.open("disk") as handle:
        start = anyio.current_time()
        request = await handle.read_overlapped(4)
        assert await request == b"\x00" * 4
    t0 = start
    assert events(monitor.for_irp(request.irp)) == [
        ("dispatch", "filter", t0),
        ("dispatch", "disk", t0),
        ("queued", "disk", t0),
        ("return", "disk", t0),
        ("return", "filter", t0),
        ("dequeued", "disk", t0),  # the lane's worker takes it when the dispatch routines have returned
        ("complete", "disk", t0 + LATENCY),
        ("routine", "filter", t0 + LATENCY),
        ("done", None, t0 + LATENCY),
    ]
    spans = [s for s in monitor.spans() if s.irp == request.irp._trace_id]
    assert [(s.device, s.driver, s.major, s.location, s.pended, s.status) for s in spans] == [
        ("filter", "Filter", "READ", 2, True, STATUS_PENDING),
        ("disk", "Disk", "READ", 1, True, STATUS_PENDING),
    ]
    for span in spans:
        assert span.to_return == 0.0
        assert span.to_complete == LATENCY
        assert span.t_end == t0 + LATENCY
        assert span.completion_status == STATUS_SUCCESS


async def test_queue_wait_in_a_startio_lane_is_the_time_spent_behind_the_others(virtual_clock: VirtualClock) -> None:
    monitor = IrpMonitor()
    io, bottom, _ = build(monitor)
    async with airp.run_device(bottom), io.open("disk") as handle:
        requests = [await handle.read_overlapped(1, offset=n) for n in range(3)]
        for request in requests:
            await request
    waits = monitor.queue_waits()
    assert [(w.irp, w.device, w.queue, w.major) for w in waits] == [(r.irp._trace_id, "disk", "io", "READ") for r in requests]
    assert [w.wait for w in waits] == [0.0, LATENCY, 2 * LATENCY]
    disk = [s for s in monitor.spans() if s.device == "disk" and s.major == "READ"]
    assert [s.to_complete for s in disk] == [LATENCY, 2 * LATENCY, 3 * LATENCY]
    timing = monitor.timings()["disk"]
    assert (timing.device, timing.driver, timing.pended, timing.queued) == ("disk", "Disk", 3, 3)
    assert timing.irps == 6  # the CREATE, CLEANUP and CLOSE too (skipped down to it)
    assert timing.max_to_complete == 3 * LATENCY
    assert timing.mean_queue_wait == LATENCY
    assert timing.max_queue_wait == 2 * LATENCY
    assert monitor.timings()["filter"].max_to_return == 0.0


async def test_a_synchronous_failure_has_no_queue_wait_and_no_pending(virtual_clock: VirtualClock) -> None:
    monitor = IrpMonitor()
    io, bottom, _ = build(monitor)
    async with airp.run_device(bottom), io.open("disk") as handle:
        await anyio.sleep(2.5)
        with pytest.raises(NtStatusError):
            await handle.read(1, offset=100)
    [disk] = [s for s in monitor.spans() if s.device == "disk" and s.major == "READ"]
    assert (disk.pended, disk.status, disk.to_return, disk.to_complete) == (False, STATUS_END_OF_FILE, 0.0, 0.0)
    assert disk.t_down == 2.5 + monitor.records[0].time
    assert monitor.queue_waits() == []


def test_without_an_event_loop_the_clock_is_monotonic_or_the_one_given() -> None:
    ticks = iter([10.0, 10.5, 11.0])
    monitor = IrpMonitor(clock=lambda: next(ticks))
    irp = monitor.watch(Irp(1))
    irp.next_stack_location.major = IrpMajor.READ
    irp.set_next_stack_location()
    complete_request(irp, STATUS_SUCCESS)
    assert [(r.event, r.time) for r in monitor.records] == [("complete", 10.0), ("done", 10.5)]
    plain = IrpMonitor()
    irp = plain.watch(Irp(1))
    irp.set_next_stack_location()
    complete_request(irp, STATUS_SUCCESS)
    first, second = plain.records
    assert 0 < first.time <= second.time


# -- filters and rings ---------------------------------------------------------------------------------


async def test_device_filter_keeps_one_layer_and_the_irps_it_saw(virtual_clock: VirtualClock) -> None:
    monitor = IrpMonitor(devices=["disk"])
    io, bottom, _ = build(monitor)
    async with airp.run_device(bottom), io.open("disk") as handle:
        await handle.read(1)
    records = monitor.records
    assert {r.device for r in records} == {"disk", None}
    assert [r.event for r in records if r.major == "READ"] == ["dispatch", "queued", "return", "dequeued", "complete", "done"]
    assert IrpMonitor(drivers="Filter").devices is None
    by_driver = IrpMonitor(drivers=["Filter"])
    io, bottom, _ = build(by_driver)
    async with airp.run_device(bottom), io.open("disk") as handle:
        await handle.read(1)
    assert {r.driver for r in by_driver.records} == {"Filter", None}


async def test_major_and_status_filters(virtual_clock: VirtualClock) -> None:
    reads = IrpMonitor(majors=[IrpMajor.READ])
    failures = IrpMonitor(statuses=[STATUS_END_OF_FILE], majors="read")
    for monitor in (reads, failures):
        io, bottom, _ = build(monitor)
        async with airp.run_device(bottom), io.open("disk") as handle:
            await handle.read(1)
            with pytest.raises(NtStatusError):
                await handle.read(1, offset=200)
    assert {r.major for r in reads.records} == {"READ"}
    assert len({r.irp for r in reads.records}) == 2
    failed = failures.records
    assert len({r.irp for r in failed}) == 1
    assert failed[-1].status == STATUS_END_OF_FILE


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"capacity": 0}, ValueError, "capacity must be positive"),
        ({"per_device": -1}, ValueError, "per_device must be positive"),
        ({"devices": [3]}, TypeError, "devices must hold names"),
        ({"majors": ["NOPE"]}, ValueError, "no major function named 'NOPE'"),
        ({"majors": [1.5]}, TypeError, "majors must hold IrpMajor"),
        ({"statuses": ["ok"]}, TypeError, "statuses must hold NtStatus"),
        ({"clock": 3}, TypeError, "clock must be a function"),
    ],
)
def test_bad_monitor_options_are_refused(options: dict[str, Any], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        IrpMonitor(**options)


async def test_per_device_rings_keep_the_recent_events_of_each_device(virtual_clock: VirtualClock) -> None:
    monitor = IrpMonitor(per_device=4)
    io, bottom, top = build(monitor)
    async with airp.run_device(bottom), io.open("disk") as handle:
        for n in range(3):
            await handle.read(1, offset=n)
    kept = monitor._rings
    assert set(kept) == {bottom, top, None}
    assert all(len(ring) == 4 for ring in kept.values())
    records = monitor.records
    assert [r.sequence for r in records] == sorted(r.sequence for r in records)
    # Each device keeps its own latest four: the filter's last READ is still there.
    assert [r.event for r in records if r.device == "filter"][-2:] == ["dispatch", "return"]


async def test_include_predicate_and_logger_still_see_records_as_they_happen(virtual_clock: VirtualClock) -> None:
    logged: list[tuple[str, dict[str, Any]]] = []

    class Logger:
        def info(self, event: str, **fields: Any) -> None:
            logged.append((event, fields))

    monitor = IrpMonitor(Logger(), include=lambda r: r.event != "queued")
    io, bottom, _ = build(monitor)
    async with airp.run_device(bottom), io.open("disk") as handle:
        await handle.read(1)
    assert "queued" not in {r.event for r in monitor.records}
    assert [event for event, _ in logged] == [f"irp.{r.event}" for r in monitor.records]
    dequeued = next(fields for event, fields in logged if event == "irp.dequeued")
    assert dequeued["queue"] == "io"
    assert isinstance(dequeued["time"], float)


# -- cancels, driver-allocated IRPs, frees, reuses, links --------------------------------------------------------


async def test_cancel_records_name_the_reason_and_the_cancel_routine(virtual_clock: VirtualClock) -> None:
    monitor = IrpMonitor()
    io, bottom, top = build(monitor)
    async with airp.run_device(bottom), io.open("disk") as handle:
        first = await handle.read_overlapped(1)
        with anyio.move_on_after(0.5):
            await handle.read(1)  # waits behind the first; the requester gives up
        irp = io.new_traced_irp(top.stack_size)
        loc = irp.next_stack_location
        loc.major = IrpMajor.READ
        loc.parameters = ReadWriteParameters(1)
        status = await airp.call_driver_with_timeout(top, irp, 0.25)
        await first
    assert status.status == airp.STATUS_IO_TIMEOUT
    cancels = [r for r in monitor.records if r.event == "cancel"]
    assert [(r.reason, r.device, r.time) for r in cancels] == [
        ("cancelled by its waiter", "disk", monitor.records[0].time + 0.5),
        ("timeout", "disk", monitor.records[0].time + 0.75),
    ]
    assert all(r.note.startswith("cancel routine ") and r.note.endswith(" ran") for r in cancels)
    assert "x cancelled (timeout)" in cancels[1].describe()
    # Cancelled in the queue: it never left it.
    assert [w.t_dequeued for w in monitor.queue_waits()][1:] == [None, None]


async def test_a_drivers_own_irps_are_watched_linked_freed_reused_and_their_routine_is_the_creators(
    virtual_clock: VirtualClock,
) -> None:
    monitor = IrpMonitor()
    io, bottom, top = build(monitor)
    splitter = Splitter()
    upper = io.create_device(splitter, "splitter")
    attach_device(upper, top)
    async with airp.run_device(bottom), io.open("disk") as handle:
        request = await handle.read_overlapped(2)
        assert await request == b"\x00\x00"
    parent = request.irp._trace_id
    first, second = splitter.children
    assert first != second  # a reused IRP is a new request, with a new number
    records = monitor.records
    link = [r for r in records if r.event == "link"]
    assert [(r.irp, r.parent, r.device, r.driver) for r in link] == [(first, parent, "splitter", "Splitter")]
    first_records = [r for r in records if r.irp == first]
    assert [r.event for r in first_records] == ["allocate", "link", "dispatch", "dispatch", "queued", "return", "return", "dequeued",
                                               "complete", "routine", "routine"]  # fmt: skip
    creator_routine = first_records[-1]
    assert creator_routine.device is None
    assert creator_routine.creator == "splitter (Splitter)"
    assert creator_routine.describe().startswith("   ^ completion routine of its creator, splitter (Splitter) ran")
    assert "the requester" not in creator_routine.describe()
    second_events = [r.event for r in records if r.irp == second]
    assert second_events[0] == "reuse"
    assert second_events[-1] == "free"
    # The child's spans show the disk's latency; its parent's span at the splitter covers both.
    [splitter_span] = [s for s in monitor.spans() if s.irp == parent and s.device == "splitter"]
    assert splitter_span.to_complete == 2 * LATENCY
    assert [s.to_complete for s in monitor.spans() if s.irp == first and s.device == "disk"] == [LATENCY]


async def test_an_allocator_with_a_monitor_names_its_owner_as_the_creator(virtual_clock: VirtualClock) -> None:
    monitor = IrpMonitor()
    splitter = Splitter()
    splitter.allocator = airp.IrpAllocator(monitor=monitor, owner=splitter)
    io, bottom, top = build(IrpMonitor())  # the requests' own monitor is another one
    upper = io.create_device(splitter, "splitter")
    attach_device(upper, top)
    async with airp.run_device(bottom), io.open("disk") as handle:
        await handle.read(2)
    first = splitter.children[0]
    allocate = [r for r in monitor.records if r.irp == first and r.event == "allocate"]
    assert [r.creator for r in allocate] == ["Splitter"]
    routines = [r for r in monitor.records if r.irp == first and r.event == "routine" and r.device is None]
    assert [r.creator for r in routines] == ["Splitter"]


async def test_records_are_built_only_when_read(virtual_clock: VirtualClock) -> None:
    monitor = IrpMonitor()
    io, bottom, _ = build(monitor)
    async with airp.run_device(bottom), io.open("disk") as handle:
        await handle.read(1)
    assert monitor._ring is not None
    assert all(type(event) is tuple for event in monitor._ring)
    assert not math.isnan(monitor.records[0].time)
    assert "IrpMonitor" in repr(monitor)
    monitor.clear()
    assert monitor.records == []


async def test_a_reused_irp_keeps_its_creator(virtual_clock: VirtualClock) -> None:
    monitor = IrpMonitor()
    io, bottom, top = build(monitor)
    splitter = Splitter()
    attach_device(io.create_device(splitter, "splitter"), top)
    async with airp.run_device(bottom), io.open("disk") as handle:
        await handle.read(2)
    reused = [r for r in monitor.records if r.irp == splitter.children[1]]
    assert reused[0].event == "reuse"
    assert {r.creator for r in reused} == {"splitter (Splitter)"}
