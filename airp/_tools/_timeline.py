"""Draw a Chrome trace of IRPs (:func:`~airp.chrome_trace`) as a timeline picture, without a browser.

One row per lane of each device (the tracks of the trace), top of the stack first; one bar per
IRP per layer coloured by major function, the pended part hatched, the queue wait as a dark strip
at the bottom of the bar, grey arrows for the flows down and up, red crosses where IRPs were
cancelled.  matplotlib draws it (the ``plot`` extra) into SVG or PNG; it is imported only here, and
only through its object API, so that a program's own matplotlib backend and pyplot state are left
alone.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._trace_export import TraceFileError, chrome_trace, read_chrome_trace
from ._tracing import IrpMonitor

__all__ = ["add_trace_arguments", "draw_timeline", "run_trace_command"]

#: Picture formats by file suffix.
FORMATS = {".svg": "svg", ".png": "png"}
_MAJOR_COLOURS = {
    "CREATE": "#8dd3c7",
    "CLOSE": "#bebada",
    "CLEANUP": "#d9d9d9",
    "READ": "#80b1d3",
    "WRITE": "#fdb462",
    "DEVICE_CONTROL": "#b3de69",
    "INTERNAL_DEVICE_CONTROL": "#ccebc5",
    "PNP": "#fccde5",
    "POWER": "#ffed6f",
}
_OTHER_COLOUR = "#bc80bd"


def _load_matplotlib() -> Any:
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        raise ModuleNotFoundError(
            "drawing a timeline needs matplotlib, which airp does not install by default: pip install 'airp[plot]'"
        ) from None
    return matplotlib, Figure


def _trace_of(source: IrpMonitor | Mapping[str, Any] | str | os.PathLike[str]) -> Mapping[str, Any]:
    if isinstance(source, IrpMonitor):
        return chrome_trace(source)
    if isinstance(source, (str, os.PathLike)):
        return read_chrome_trace(source)
    if isinstance(source, Mapping):
        if not isinstance(source.get("traceEvents"), list):
            raise TraceFileError('expected a Chrome trace: a mapping with a "traceEvents" list')
        return source
    raise TypeError(
        f"draw_timeline(source) needs an IrpMonitor, a Chrome trace or the path of one, got {type(source).__name__} {source!r}"
    )


def draw_timeline(
    source: IrpMonitor | Mapping[str, Any] | str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    title: str | None = None,
    width: float = 12.0,
) -> Path:
    """Draw the timeline of *source* into the picture file *out*.

    :param source: an :class:`~airp.IrpMonitor`, a trace from :func:`~airp.chrome_trace`, or the path
        of a file :func:`~airp.write_chrome_trace` wrote.
    :param out: the picture to write; its suffix chooses the format: ``.svg`` or ``.png``.
    :param title: a title above the timeline (default: none).
    :param width: the picture's width in inches (the height follows the number of rows).
    :returns: *out* as a :class:`~pathlib.Path`.
    :raises ValueError: if *out* has another suffix, or *width* is not positive.
    :raises TraceFileError: if *source* is not a Chrome trace (a :class:`ValueError`).
    :raises ModuleNotFoundError: if matplotlib is not installed (``pip install 'airp[plot]'``).
    :raises OSError: if a file cannot be read or written.
    :raises TypeError: if *source*, *out*, *title* or *width* is not of a kind listed above.
    """
    if not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"draw_timeline(source, out): out must be the path of the picture (str or path), got {type(out).__name__} {out!r}")
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title must be a str or None, got {type(title).__name__} {title!r}")
    if isinstance(width, bool) or not isinstance(width, (int, float)):
        raise TypeError(f"width must be a positive number of inches, got {type(width).__name__} {width!r}")
    path = Path(out)
    picture_format = FORMATS.get(path.suffix.lower())
    if picture_format is None:
        raise ValueError(f"cannot draw {os.fspath(out)!r}: the picture's name must end in .svg or .png")
    if not width > 0:
        raise ValueError(f"width must be a positive number of inches, got {width!r}")
    trace = _trace_of(source)
    matplotlib, figure_class = _load_matplotlib()
    events: list[Mapping[str, Any]] = [e for e in trace["traceEvents"] if isinstance(e, Mapping)]

    # Rows: the lanes, grouped by device in the trace's order.
    device_names = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "process_name"}
    lane_names = {(e["pid"], e["tid"]): e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "thread_name"}
    for e in events:
        if e.get("ph") == "X":
            lane_names.setdefault((e["pid"], e["tid"]), device_names.get(e["pid"], f"track {e['pid']}.{e['tid']}"))
    rows = {lane: n for n, lane in enumerate(sorted(lane_names))}
    timed = [e for e in events if isinstance(e.get("ts"), (int, float))]
    start = min((e["ts"] for e in timed), default=0.0) / 1000
    end = max((e["ts"] + e.get("dur", 0) for e in timed), default=1.0) / 1000
    span = max(end - start, 1e-9)
    least = span / 400  # an instantaneous layer is still drawn, as a thin bar

    height = 1.2 + 0.45 * max(len(rows), 1)
    with matplotlib.rc_context({"svg.hashsalt": "airp", "svg.fonttype": "none", "font.size": 8}):
        figure = figure_class(figsize=(width, height), layout="constrained")
        axes = figure.add_subplot()
        majors_seen: dict[str, str] = {}
        for e in events:
            if e.get("ph") != "X" or (e["pid"], e["tid"]) not in rows:
                continue
            y = rows[(e["pid"], e["tid"])]
            x = e["ts"] / 1000
            w = max(e["dur"] / 1000, least)
            args = e.get("args") or {}
            if "location" in args:
                major = str(args.get("major", "?"))
                colour = _MAJOR_COLOURS.get(major, _OTHER_COLOUR)
                majors_seen.setdefault(major, colour)
                axes.broken_barh([(x, w)], (y - 0.35, 0.7), facecolors=colour, edgecolors="#333333", linewidth=0.4)
                if w > span / 25:
                    axes.text(x + w / 2, y, f"#{args.get('irp')}", ha="center", va="center", fontsize=6)
            elif e.get("name") == "pended":
                axes.broken_barh([(x, w)], (y - 0.35, 0.7), facecolors="none", edgecolors="#555555", hatch="///", linewidth=0)
            elif str(e.get("name", "")).startswith("queued"):
                axes.broken_barh([(x, w)], (y - 0.35, 0.15), facecolors="#444444")
        flows: dict[object, dict[str, Mapping[str, Any]]] = {}
        for e in events:
            if e.get("ph") in ("s", "f"):
                flows.setdefault(e.get("id"), {})[e["ph"]] = e
        for pair in flows.values():
            if "s" in pair and "f" in pair:
                s, f = pair["s"], pair["f"]
                ys, yf = rows.get((s["pid"], s["tid"])), rows.get((f["pid"], f["tid"]))
                if ys is None or yf is None or ys == yf:
                    continue
                axes.annotate(
                    "",
                    xy=(f["ts"] / 1000, yf),
                    xytext=(s["ts"] / 1000, ys),
                    arrowprops={"arrowstyle": "->", "color": "#888888", "linewidth": 0.6, "shrinkA": 0, "shrinkB": 0},
                )
        cancels = [e for e in events if e.get("ph") == "i" and (e.get("pid"), e.get("tid")) in rows]
        if cancels:
            axes.scatter([e["ts"] / 1000 for e in cancels], [rows[(e["pid"], e["tid"])] for e in cancels], marker="x", color="#d62728", zorder=3)
        axes.set_yticks(list(rows.values()), [lane_names[lane] for lane in rows])
        axes.set_ylim(max(len(rows), 1) - 0.5, -0.5)  # the top of the stack at the top
        axes.set_xlim(start - span * 0.01, end + span * 0.01)
        axes.set_xlabel("time (ms)")
        axes.grid(axis="x", linewidth=0.3, alpha=0.5)
        if title:
            axes.set_title(title)
        from matplotlib.patches import Patch

        handles = [Patch(facecolor=colour, edgecolor="#333333", label=major) for major, colour in majors_seen.items()]
        handles.append(Patch(facecolor="white", edgecolor="#555555", hatch="///", label="pended"))
        handles.append(Patch(facecolor="#444444", label="queued"))
        axes.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7, frameon=False)
        figure.savefig(path, format=picture_format, metadata={"Date": None} if picture_format == "svg" else None, dpi=120)
    return path


def add_trace_arguments(parser: Any) -> None:
    """The options of ``airp trace``, on its argparse sub-parser."""
    parser.add_argument("file", metavar="FILE.json", help="a Chrome trace written by `airp demo --trace` or airp.write_chrome_trace")
    parser.add_argument("--svg", metavar="OUT.svg", help="draw the timeline into this SVG file")
    parser.add_argument("--png", metavar="OUT.png", help="draw the timeline into this PNG file")
    parser.add_argument("--title", default=None, help="a title above the timeline")


def run_trace_command(args: Any, *, err: Any = None) -> int:
    """``airp trace``: draw a trace file as SVG and/or PNG.

    :returns: 0, or 2 if no picture was asked for, the file is not a trace, a picture's name has
        the wrong suffix, or matplotlib is missing (the message goes to *err*, default stderr).
    """
    import sys

    err = sys.stderr if err is None else err
    outputs = [(option, name) for option, name in (("--svg", args.svg), ("--png", args.png)) if name]
    if not outputs:
        print("airp trace: give --svg OUT.svg and/or --png OUT.png", file=err)
        return 2
    for option, name in outputs:
        expected = ".svg" if option == "--svg" else ".png"
        if not name.lower().endswith(expected):
            print(f"airp trace: {option} needs a file name ending in {expected}, got {name!r}", file=err)
            return 2
    try:
        trace = read_chrome_trace(args.file)
        for _, name in outputs:
            draw_timeline(trace, name, title=args.title)
            print(f"wrote {name}")
    except (TraceFileError, ModuleNotFoundError, OSError) as error:
        print(f"airp trace: {error}", file=err)
        return 2
    return 0
