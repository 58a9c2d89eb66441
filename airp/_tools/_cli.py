"""The ``airp`` command line."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Sequence

import anyio

from .._iomanager._plugins import available_drivers
from .._version import __version__
from ._demo import run_demo
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
    anyio.run(functools.partial(run_demo, trace=args.trace), backend=args.backend)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
