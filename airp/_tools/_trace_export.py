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

    Everything ``airp trace`` draws is checked here, so that a file it cannot draw is refused
    with one line naming the file and the event, not a traceback: UTF-8 JSON (nested no deeper
    than the parser's recursion limit), a ``"traceEvents"`` list of objects with a ``"ph"``;
    every ``ts`` and ``dur`` a finite number (``NaN`` and ``Infinity``, which Python's JSON reader
    accepts, have no place on a timeline), slices (``X``) with numeric ``ts``, ``dur``, ``pid`` and
    ``tid`` and a finite end, flow ends (``s``/``f``) with ``ts``, ``pid`` and ``tid``, instants
    (``i``) with ``ts``, track names (``process_name``/``thread_name``) with their ids and an
    ``args.name``, ``args`` an object, and ids numbers or strings.

    :param path: the JSON file.
    :returns: the trace object.
    :raises TraceFileError: if the file is not UTF-8 JSON, or not such a trace; the message names
        the file and what was expected.
    :raises OSError: if the file cannot be read.
    """
    import math

    name = os.fspath(path)
    with open(path, "rb") as file:
        data = file.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise TraceFileError(
            f"{name}: not UTF-8 text ({error.reason} at byte {error.start}); expected a trace written by airp demo --trace"
            " or write_chrome_trace"
        ) from None
    try:
        trace = json.loads(text)
    except json.JSONDecodeError as error:
        raise TraceFileError(f"{name}: not JSON (line {error.lineno}, column {error.colno}: {error.msg}); expected a trace written by airp demo --trace or write_chrome_trace") from None
    except RecursionError:
        raise TraceFileError(f"{name}: JSON nested too deeply to read; expected a trace written by airp demo --trace or write_chrome_trace") from None
    if not isinstance(trace, dict) or not isinstance(trace.get("traceEvents"), list):
        raise TraceFileError(f"{name}: expected a JSON object with a \"traceEvents\" list (the Chrome Trace Event format)")

    def number(value: object) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    def scalar(value: object) -> bool:
        # Track and flow ids key dictionaries when the trace is drawn.
        return isinstance(value, (int, float, str)) and not isinstance(value, bool)

    for n, event in enumerate(trace["traceEvents"]):
        where = f"{name}: traceEvents[{n}]"
        if not isinstance(event, dict) or not isinstance(event.get("ph"), str):
            raise TraceFileError(f"{where} is not an event object with a \"ph\" field")
        phase = event["ph"]
        if phase == "X" and not all(isinstance(event.get(key), (int, float)) for key in ("ts", "dur", "pid", "tid")):
            raise TraceFileError(f"{where} is a slice without numeric ts, dur, pid and tid")
        for key in ("ts", "dur"):
            if key in event and not number(event[key]):
                raise TraceFileError(f"{where} has {key} = {event[key]!r}; expected a finite number of microseconds")
        if "args" in event and not isinstance(event["args"], dict):
            raise TraceFileError(f"{where} has args = {event['args']!r}; expected an object")
        for key in ("pid", "tid", "id"):
            if key in event and not scalar(event[key]):
                raise TraceFileError(f"{where} has {key} = {event[key]!r}; expected a number or a string")
        if phase == "X":
            if not math.isfinite(event["ts"] + event["dur"]):
                raise TraceFileError(f"{where} is a slice that ends at {event['ts'] + event['dur']!r}; expected a finite end")
        elif phase in ("s", "f"):
            if not all(key in event for key in ("ts", "pid", "tid")):
                raise TraceFileError(f"{where} is a flow end without ts, pid and tid")
        elif phase in ("i", "I"):
            if "ts" not in event:
                raise TraceFileError(f"{where} is an instant without ts")
        elif phase == "M" and event.get("name") in ("process_name", "thread_name"):
            ids = ("pid",) if event["name"] == "process_name" else ("pid", "tid")
            if not all(key in event for key in ids) or not isinstance(event.get("args"), dict) or "name" not in event["args"]:
                raise TraceFileError(f"{where} names a track without {' and '.join(ids)} and args.name")
    return trace
