"""The ``airp`` command line."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence

import anyio

from .._iomanager._plugins import available_drivers
from .._version import __version__
from ._demo import check_trace_path, run_demo
from ._simulate import add_simulate_arguments, run_simulate_command
from ._timeline import add_trace_arguments, run_trace_command

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``airp`` command line; returns the exit status."""
    parser = argparse.ArgumentParser(prog="airp", description="The Windows IRP model on coroutines.")
    parser.add_argument("--version", action="version", version=f"airp {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="send a mixed workload through a demo driver stack and narrate it")
    demo.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio", help="event loop to run on (default asyncio)")
    demo.add_argument("--trace", metavar="OUT.json", default=None, help="also write the demo's IRPs as a Chrome trace (docs/tracing.md)")
    commands.add_parser("drivers", help="list the installed driver plugins")
    add_simulate_arguments(
        commands.add_parser("simulate", help="run a described driver stack under a workload and report (docs/simulate.md)")
    )
    add_trace_arguments(commands.add_parser("trace", help="draw a Chrome trace of IRPs as an SVG or PNG timeline (docs/tracing.md)"))
    args = parser.parse_args(argv)
    if args.command == "trace":
        return run_trace_command(args)
    if args.command == "simulate":
        return run_simulate_command(args)
    if args.command == "drivers":
        for name, entry in sorted(available_drivers().items()):
            print(f"{name:24} {entry.value}")
        return 0
    return _run_demo_command(args)


def _run_demo_command(args: argparse.Namespace) -> int:
    """``airp demo``: 0, or 2 with one line on stderr if the ``--trace`` file cannot be written.

    The file is checked before the demo runs (a directory, a directory that does not exist), and
    a write that fails at the end is reported the same way: bad input is not a traceback, whose
    exit status 1 is what ``airp simulate`` gives for a lost request.
    """
    try:
        if args.trace is not None:
            check_trace_path(args.trace)
        anyio.run(functools.partial(run_demo, trace=args.trace), backend=args.backend)
    except OSError as error:
        if args.trace is None or error.filename != args.trace:
            raise
        print(f"airp demo: cannot write the trace to {args.trace!r}: {error.strerror}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
