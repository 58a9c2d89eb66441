"""The Chrome Trace Event export: a real run written to a file, loaded back and checked for the
structure Perfetto and chrome://tracing need (tracks, slices per layer that nest, paired flows,
timestamps in order along each IRP's path), on both backends and the virtual clock."""

from __future__ import annotations

import io as text_io
import itertools
import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from _trace_drivers import LATENCY, Splitter, build

import airp
from airp import IrpMonitor, attach_device, chrome_trace, write_chrome_trace
from airp._tools._trace_export import TraceFileError, read_chrome_trace
from airp.testing import VirtualClock

pytestmark = pytest.mark.anyio


async def traced_run() -> IrpMonitor:
    """Three overlapped reads through filter -> disk, a read cancelled by its waiter, and a read
    that a splitter serves with an IRP of its own."""
    monitor = IrpMonitor()
    io, bottom, _ = build(monitor)
    async with airp.run_device(bottom), io.open("disk") as handle:
        requests = [await handle.read_overlapped(1, offset=n) for n in range(3)]
        for request in requests:
            await request
        first = await handle.read_overlapped(1)
        with anyio.move_on_after(0.5):
            await handle.read(1)
        await first
    io, bottom, top = build(monitor, disk_name="disk2", filter_name="filter2")
    attach_device(io.create_device(Splitter(), "splitter"), top)
    async with airp.run_device(bottom), io.open("disk2") as handle:
        await handle.read(2)
    return monitor


def slices(trace: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in trace["traceEvents"] if e["ph"] == "X"]


def layer_slices(trace: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in slices(trace) if "location" in e["args"]]


async def test_the_file_has_a_track_per_device_and_a_slice_per_irp_per_layer(virtual_clock: VirtualClock, tmp_path: Path) -> None:
    monitor = await traced_run()
    path = tmp_path / "trace.json"
    write_chrome_trace(monitor, path)
    trace = json.loads(path.read_text())
    assert trace["otherData"]["generator"] == "airp"
    assert trace["displayTimeUnit"] == "ms"
    metadata = [e for e in trace["traceEvents"] if e["ph"] == "M"]
    processes = {e["pid"]: e["args"]["name"] for e in metadata if e["name"] == "process_name"}
    assert sorted(processes.values()) == ["disk (Disk)", "disk2 (Disk)", "filter (Filter)", "filter2 (Filter)", "splitter (Splitter)"]
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in metadata if e["name"] == "thread_name"}
    # The three overlapped reads held the disk at once: three lanes, the first named after it.
    disk_pid = next(pid for pid, name in processes.items() if name == "disk (Disk)")
    assert [name for (pid, _), name in sorted(threads.items()) if pid == disk_pid] == ["disk (Disk)", "disk (Disk) #2", "disk (Disk) #3"]
    # One slice per IRP per layer, as many as the monitor's spans, on its device's track.
    spans = monitor.spans()
    layers = layer_slices(trace)
    assert sorted((e["args"]["irp"], e["args"]["device"]) for e in layers) == sorted((s.irp, s.device) for s in spans)
    for event in layers:
        assert processes[event["pid"]].startswith(event["args"]["device"])
        assert (event["pid"], event["tid"]) in threads
        assert event["name"] == f"{event['args']['major']} #{event['args']['irp']}"


async def test_times_are_microseconds_of_virtual_time_and_pended_time_is_shown(virtual_clock: VirtualClock) -> None:
    monitor = await traced_run()
    trace = chrome_trace(monitor)
    reads = [e for e in layer_slices(trace) if e["args"]["device"] == "disk" and e["args"]["major"] == "READ"]
    # The three overlapped reads: 1, 2 and 3 device latencies from the dispatch (queue waits included).
    assert [e["dur"] for e in reads[:3]] == [LATENCY * 1e6, 2 * LATENCY * 1e6, 3 * LATENCY * 1e6]
    assert all(e["args"]["pended"] for e in reads[:3])
    pended = [e for e in slices(trace) if e["name"] == "pended"]
    assert {e["args"]["irp"] for e in pended} >= {e["args"]["irp"] for e in reads[:3]}
    queued = [e for e in slices(trace) if e["name"] == "queued in io" and e["args"]["irp"] == reads[2]["args"]["irp"]]
    assert [e["dur"] for e in queued] == [2 * LATENCY * 1e6]
    cancels = [e for e in trace["traceEvents"] if e["ph"] == "i"]
    assert [e["name"] for e in cancels] == ["cancel (cancelled by its waiter)"]
    assert min(e["ts"] for e in trace["traceEvents"] if "ts" in e) == 0.0


async def test_slices_of_one_lane_nest_and_never_overlap(virtual_clock: VirtualClock) -> None:
    trace = chrome_trace(await traced_run())
    lanes: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for event in slices(trace):
        lanes.setdefault((event["pid"], event["tid"]), []).append(event)
    for events in lanes.values():
        open_ends: list[float] = []
        for event in sorted(events, key=lambda e: (e["ts"], -e["dur"])):
            start, end = event["ts"], event["ts"] + event["dur"]
            while open_ends and open_ends[-1] <= start and not (open_ends[-1] == start and end == start):
                open_ends.pop()
            if open_ends:
                assert end <= open_ends[-1], f"{event} overlaps its enclosing slice"
            open_ends.append(end)


async def test_flows_pair_up_and_follow_each_irp_down_and_back_up(virtual_clock: VirtualClock) -> None:
    trace = chrome_trace(await traced_run())
    flows: dict[int, dict[str, dict[str, Any]]] = {}
    for event in trace["traceEvents"]:
        if event["ph"] in ("s", "f"):
            pair = flows.setdefault(event["id"], {})
            assert event["ph"] not in pair, f"flow {event['id']} has two {event['ph']!r} events"
            pair[event["ph"]] = event
    assert flows
    assert all(set(pair) == {"s", "f"} for pair in flows.values())
    assert all(pair["f"]["bp"] == "e" and pair["s"]["ts"] == pair["f"]["ts"] for pair in flows.values())
    assert {pair["s"]["name"] for pair in flows.values()} == {"down", "up"}
    # Each flow starts and ends inside a layer slice of its lane.
    layers = layer_slices(trace)
    for pair in flows.values():
        for end in pair.values():
            assert any(
                e["pid"] == end["pid"] and e["tid"] == end["tid"] and e["ts"] <= end["ts"] <= e["ts"] + e["dur"] for e in layers
            )
    # Along each IRP's path the layers below are reached no earlier than the ones above.
    by_irp: dict[int, list[dict[str, Any]]] = {}
    for event in layers:
        by_irp.setdefault(event["args"]["irp"], []).append(event)
    for events in by_irp.values():
        down = sorted(events, key=lambda e: -e["args"]["location"])
        assert [e["ts"] for e in down] == sorted(e["ts"] for e in down)
        for upper, lower in itertools.pairwise(down):
            if upper["args"]["location"] > lower["args"]["location"]:
                assert lower["ts"] + lower["dur"] <= upper["ts"] + upper["dur"]


async def test_write_to_a_file_object_and_read_back(virtual_clock: VirtualClock, tmp_path: Path) -> None:
    monitor = await traced_run()
    buffer = text_io.StringIO()
    write_chrome_trace(monitor, buffer)
    assert json.loads(buffer.getvalue()) == chrome_trace(monitor)
    path = tmp_path / "t.json"
    path.write_text(buffer.getvalue())
    assert read_chrome_trace(path)["traceEvents"] == chrome_trace(monitor)["traceEvents"]
    assert chrome_trace(monitor.records[:5])["traceEvents"]


def test_an_empty_monitor_exports_an_empty_trace() -> None:
    assert chrome_trace(IrpMonitor())["traceEvents"] == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", 'a JSON object with a "traceEvents" list'),
        ('{"traceEvents": [3]}', r"traceEvents\[0\] is not an event object"),
        ('{"traceEvents": [{"ph": "X", "ts": "a"}]}', r"traceEvents\[0\] is a slice without numeric ts"),
    ],
)
def test_a_bad_trace_file_is_refused_naming_the_file(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(TraceFileError, match=message) as caught:
        read_chrome_trace(path)
    assert "bad.json" in str(caught.value)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(TypeError, match="needs an IrpMonitor or TraceRecords"):
        chrome_trace(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="needs an IrpMonitor or TraceRecords"):
        chrome_trace([3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="a path or a text file"):
        write_chrome_trace(IrpMonitor(), 3)  # type: ignore[arg-type]
