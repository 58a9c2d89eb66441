"""Export an :class:`~airp.IrpMonitor`'s records in the Chrome Trace Event format (JSON).

Perfetto's UI (https://ui.perfetto.dev) and ``chrome://tracing`` open the file as a timeline:

- one track group per device (a trace "process" named after the device and its driver); an IRP
  that overlaps another on the same device goes to a second lane of that device, because both
  viewers require the slices of one track to nest, never to overlap;
- one complete slice (``"ph": "X"``) per IRP per layer, from the dispatch down to the layer to the
  moment the layer was done with it (its dispatch routine returned and the completion walk
  passed it);
- inside it, a ``pended`` slice from the dispatch routine's STATUS_PENDING return to the
  completion, and a ``queued`` slice for the time the IRP waited in a queue of the device;
- flow arrows (``"s"``/``"f"``, bound to the enclosing slices) from each layer to the one it called,
  at the dispatch, and back up at the completion;
- an instant (``"ph": "i"``) where an IRP was cancelled, naming the reason.

Times are microseconds since the first record kept (``ts``, ``dur``), on the run's clock.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import IO, Any

from .._version import __version__
from ._tracing import IrpMonitor, LayerSpan, QueueWait, TraceRecord, _queue_waits, _spans

__all__ = ["chrome_trace", "read_chrome_trace", "write_chrome_trace"]

_MICROSECONDS = 1_000_000.0
#: The marker a trace file written here carries, so that ``airp trace`` can tell it from others.
GENERATOR = "airp"


class _Lanes:
    """Lanes of one device: each slice goes to the first lane free at its start."""

    def __init__(self, pid: int, label: str) -> None:
        self.pid = pid
        self.label = label
        self.ends: list[float] = []

    def place(self, start: float, end: float) -> int:
        for lane, busy_until in enumerate(self.ends):
            if busy_until <= start:
                self.ends[lane] = end
                return lane
        self.ends.append(end)
        return len(self.ends) - 1


def chrome_trace(monitor: IrpMonitor | Iterable[TraceRecord]) -> dict[str, Any]:
    """The monitor's kept records as a Chrome Trace Event format object.

    :param monitor: an :class:`~airp.IrpMonitor`, or records (e.g. ``monitor.for_irp(irp)``).
    :returns: a JSON-ready dict with ``"traceEvents"`` (metadata, slices, flows, instants),
        ``"displayTimeUnit"`` and ``"otherData"``.
    :raises TypeError: if *monitor* is neither a monitor nor an iterable of records.
    """
    if isinstance(monitor, IrpMonitor):
        records = monitor.records
    elif isinstance(monitor, Iterable):
        records = list(monitor)
        for record in records:
            if not isinstance(record, TraceRecord):
                raise TypeError(f"chrome_trace needs an IrpMonitor or TraceRecords, got an iterable holding {record!r}")
    else:
        raise TypeError(f"chrome_trace needs an IrpMonitor or TraceRecords, got {monitor!r}")
    spans = _spans(records)
    waits = _queue_waits(records)
    origin = min((r.time for r in records), default=0.0)
    last = max((r.time for r in records), default=0.0)

    def us(t: float) -> float:
        return round((t - origin) * _MICROSECONDS, 3)

    devices: dict[str, _Lanes] = {}
    events: list[dict[str, Any]] = []
    for span in spans:
        if span.device not in devices:
            devices[span.device] = _Lanes(len(devices) + 1, span.device if span.device == span.driver else f"{span.device} ({span.driver})")
    waits_of: dict[tuple[int, str], list[QueueWait]] = {}
    for wait in waits:
        waits_of.setdefault((wait.irp, wait.device), []).append(wait)

    placed: list[tuple[LayerSpan, int, int, float]] = []  # span, pid, tid, end
    for span in spans:
        lanes = devices[span.device]
        end = span.t_end if span.t_end is not None else max(last, span.t_down)
        tid = lanes.place(span.t_down, end) + 1
        placed.append((span, lanes.pid, tid, end))
        args: dict[str, Any] = {
            "irp": span.irp,
            "major": span.major,
            "device": span.device,
            "driver": span.driver,
            "location": span.location,
            "returned": span.status.name if span.status is not None else None,
            "completed with": span.completion_status.name if span.completion_status is not None else None,
            "pended": span.pended,
            "to return (s)": span.to_return,
            "to complete (s)": span.to_complete,
        }
        if span.t_end is None:
            args["unfinished"] = True
        common = {"pid": lanes.pid, "tid": tid, "cat": "irp"}
        events.append({"name": f"{span.major} #{span.irp}", "ph": "X", "ts": us(span.t_down), "dur": round(us(end) - us(span.t_down), 3), **common, "args": args})
        if span.pended and span.t_return is not None:
            pended_end = span.t_complete if span.t_complete is not None else end
            events.append(
                {"name": "pended", "ph": "X", "ts": us(span.t_return), "dur": round(us(pended_end) - us(span.t_return), 3), **common, "args": {"irp": span.irp}}
            )
        for wait in waits_of.get((span.irp, span.device), ()):
            # Clipped to the layer's slice (and to the pended slice it overlaps) so that it nests.
            start = max(wait.t_queued, span.t_return if span.pended and span.t_return is not None else span.t_down)
            stop = min(wait.t_dequeued if wait.t_dequeued is not None else end, end)
            if span.t_down <= wait.t_queued <= end and stop >= start:
                events.append(
                    {
                        "name": f"queued in {wait.queue or 'the queue'}",
                        "ph": "X",
                        "ts": us(start),
                        "dur": round(us(stop) - us(start), 3),
                        **common,
                        "args": {"irp": span.irp, "queue": wait.queue, "wait (s)": wait.wait},
                    }
                )

    # Flows: from the layer that called down to the one it called, and back up at the completion.
    flow = 0
    by_irp: dict[int, list[tuple[LayerSpan, int, int, float]]] = {}
    for entry in placed:
        by_irp.setdefault(entry[0].irp, []).append(entry)
    for entries in by_irp.values():
        for j, (span, pid, tid, _end) in enumerate(entries):
            caller = next((e for e in reversed(entries[:j]) if e[0].location >= span.location), None)
            if caller is None:
                continue
            _, upper_pid, upper_tid, upper_end = caller
            flow += 1
            events.append({"name": "down", "ph": "s", "id": flow, "ts": us(span.t_down), "pid": upper_pid, "tid": upper_tid, "cat": "irp.flow"})
            events.append({"name": "down", "ph": "f", "bp": "e", "id": flow, "ts": us(span.t_down), "pid": pid, "tid": tid, "cat": "irp.flow"})
            if span.t_complete is not None and span.t_complete <= upper_end:
                flow += 1
                events.append({"name": "up", "ph": "s", "id": flow, "ts": us(span.t_complete), "pid": pid, "tid": tid, "cat": "irp.flow"})
                events.append(
                    {"name": "up", "ph": "f", "bp": "e", "id": flow, "ts": us(span.t_complete), "pid": upper_pid, "tid": upper_tid, "cat": "irp.flow"}
                )

    lane_of = {(span.irp, span.device): (pid, tid) for span, pid, tid, _ in placed}
    for record in records:
        if record.event == "cancel" and record.device is not None and (record.irp, record.device) in lane_of:
            pid, tid = lane_of[(record.irp, record.device)]
            events.append(
                {
                    "name": f"cancel ({record.reason or 'cancel_irp'})",
                    "ph": "i",
                    "s": "t",
                    "ts": us(record.time),
                    "pid": pid,
                    "tid": tid,
                    "cat": "irp",
                    "args": {"irp": record.irp, "note": record.note},
                }
            )

    metadata: list[dict[str, Any]] = []
    for lanes in devices.values():
        metadata.append({"name": "process_name", "ph": "M", "pid": lanes.pid, "args": {"name": lanes.label}})
        metadata.append({"name": "process_sort_index", "ph": "M", "pid": lanes.pid, "args": {"sort_index": lanes.pid}})
        for lane in range(len(lanes.ends)):
            name = lanes.label if lane == 0 else f"{lanes.label} #{lane + 1}"
            metadata.append({"name": "thread_name", "ph": "M", "pid": lanes.pid, "tid": lane + 1, "args": {"name": name}})
    return {
        "traceEvents": metadata + events,
        "displayTimeUnit": "ms",
        "otherData": {"generator": GENERATOR, "version": __version__, "origin (s)": origin},
    }


def write_chrome_trace(monitor: IrpMonitor | Iterable[TraceRecord], path_or_file: str | os.PathLike[str] | IO[str]) -> None:
    """Write :func:`chrome_trace` of *monitor* as JSON.

    :param monitor: an :class:`~airp.IrpMonitor`, or records.
    :param path_or_file: a path to (over)write, or a text file open for writing.
    :raises TypeError: if *path_or_file* is neither a path nor a writable text file.
    :raises OSError: if the file cannot be written.
    """
    trace = chrome_trace(monitor)
    if isinstance(path_or_file, (str, os.PathLike)):
        with open(path_or_file, "w", encoding="utf-8") as file:
            json.dump(trace, file, indent=None, separators=(",", ":"))
            file.write("\n")
        return
    if not callable(getattr(path_or_file, "write", None)):
        raise TypeError(f"write_chrome_trace needs a path or a text file open for writing, got {path_or_file!r}")
    json.dump(trace, path_or_file, indent=None, separators=(",", ":"))
    path_or_file.write("\n")


class TraceFileError(ValueError):
    """A file is not a Chrome trace that :func:`write_chrome_trace` wrote."""


def read_chrome_trace(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a Chrome trace written by :func:`write_chrome_trace`, checking its shape.

    :param path: the JSON file.
    :returns: the trace object.
    :raises TraceFileError: if the file is not JSON, or not such a trace; the message names the file
        and what was expected.
    :raises OSError: if the file cannot be read.
    """
    with open(path, encoding="utf-8") as file:
        text = file.read()
    try:
        trace = json.loads(text)
    except json.JSONDecodeError as error:
        raise TraceFileError(f"{os.fspath(path)}: not JSON (line {error.lineno}, column {error.colno}: {error.msg}); expected a trace written by airp demo --trace or write_chrome_trace") from None
    if not isinstance(trace, dict) or not isinstance(trace.get("traceEvents"), list):
        raise TraceFileError(f"{os.fspath(path)}: expected a JSON object with a \"traceEvents\" list (the Chrome Trace Event format)")
    for n, event in enumerate(trace["traceEvents"]):
        if not isinstance(event, dict) or not isinstance(event.get("ph"), str):
            raise TraceFileError(f"{os.fspath(path)}: traceEvents[{n}] is not an event object with a \"ph\" field")
        if event["ph"] == "X" and not all(isinstance(event.get(key), (int, float)) for key in ("ts", "dur", "pid", "tid")):
            raise TraceFileError(f"{os.fspath(path)}: traceEvents[{n}] is a slice without numeric ts, dur, pid and tid")
    return trace
