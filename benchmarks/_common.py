"""Shared pieces of the benchmark scripts: the baseline, the timing harness, the workloads.

Every figure is a ratio measured in one process: an airp workload and the baseline workload it is
held against run alternately (A B A B ...), each round keeps the best of a few runs of each, and
the figure is the median over rounds of the per-round ratio.  Machine noise that lasts longer than
one round hits both sides; noise shorter than a run is removed by the best-of.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import importlib.util
import inspect
import math
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FunctionType, ModuleType
from typing import Any

import anyio

import airp
from airp import (
    STATUS_CONTINUE_COMPLETION,
    STATUS_PENDING,
    STATUS_SUCCESS,
    DeviceObject,
    Irp,
    IrpMajor,
    attach_device,
)

# -- the baseline ---------------------------------------------------------------------------------

BASELINE_DIR = Path(__file__).resolve().parents[2] / "shared" / "bench"


def load_baseline() -> ModuleType:
    """``shared/bench/baseline.py`` next to the repository, or the local stand-in if it is missing."""
    path = BASELINE_DIR / "baseline.py"
    if path.is_file():
        spec = importlib.util.spec_from_file_location("airp_bench_baseline", path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.__airp_source__ = str(path)  # type: ignore[attr-defined]
        return module
    print(
        f"NOTE: {path} not found; using benchmarks/_fallback_baseline.py, a local model of the same"
        " floors.  The budget in DESIGN.md is defined against the shared file: treat these ratios"
        " as indicative.",
        file=sys.stderr,
    )
    import _fallback_baseline as module

    module.__airp_source__ = "benchmarks/_fallback_baseline.py (fallback)"  # type: ignore[attr-defined]
    return module


baseline = load_baseline()


def baseline_runner(name: str, *args: Any, ops: int) -> Callable[[], Awaitable[float]]:
    """A no-argument coroutine factory running baseline *name* for about *ops* operations."""
    fn = getattr(baseline, name)
    # The baseline's hand-off functions run ITER // 4 operations; the chains run ITER.
    iters = ops * 4 if name.endswith("handoff") else ops

    async def run() -> float:
        baseline.ITER = iters  # type: ignore[attr-defined]
        return float(await fn(*args))

    run.__name__ = name
    return run


# -- the timing harness ---------------------------------------------------------------------------


def per_op(start: float, count: int) -> float:
    return (time.perf_counter() - start) / count * 1e6


async def interleaved(contenders: dict[str, Callable[[], Awaitable[float]]], rounds: int, best_of: int) -> dict[str, list[float]]:
    """Run every contender ``rounds * best_of`` times, alternating; per round keep each one's best.

    Each contender is a coroutine factory returning microseconds per operation.  The order within a
    round alternates so neither side always runs first (after a GC-heavy run, say).
    """
    names = list(contenders)
    for name in names:  # warm up: specialise the bytecode, fill free lists and caches
        await contenders[name]()
    results: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        best = dict.fromkeys(names, math.inf)
        for _ in range(best_of):
            for name in order:
                best[name] = min(best[name], await contenders[name]())
        for name in names:
            results[name].append(best[name])
    return results


@dataclass
class Ratio:
    """One reported figure: the median over rounds of ``numerator / denominator``."""

    label: str
    num: str
    den: str
    ratios: list[float]
    num_us: float
    den_us: float
    goal: float | None = None  # the ratio must be <= goal
    unit: str = "x"
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.ratios)

    @property
    def verdict(self) -> str:
        if self.goal is None:
            return "info"
        return "MET" if self.median <= self.goal else "NOT MET"


def ratio(label: str, results: dict[str, list[float]], num: str, den: str, goal: float | None = None, note: str = "") -> Ratio:
    pairs = [a / b for a, b in zip(results[num], results[den], strict=True)]
    return Ratio(label, num, den, pairs, statistics.median(results[num]), statistics.median(results[den]), goal, note=note)


def print_ratios(title: str, rows: list[Ratio]) -> None:
    print(f"\n== {title}")
    width = max(len(r.label) for r in rows)
    for r in rows:
        lo, hi = min(r.ratios), max(r.ratios)
        goal = f"goal <= {r.goal:g}x" if r.goal is not None else ""
        print(
            f"  {r.label:<{width}}  {r.median:6.3f}x  (rounds {lo:.3f}..{hi:.3f};"
            f" {r.num_us:.3f} us vs {r.den_us:.3f} us)  {goal:<14} {r.verdict}"
        )
        if r.note:
            print(f"  {'':<{width}}  {r.note}")


def header() -> None:
    anyio_version = getattr(anyio, "__version__", None)
    if anyio_version is None:
        from importlib.metadata import version

        anyio_version = version("anyio")
    print(
        f"python {platform.python_version()} ({platform.python_implementation()}), anyio {anyio_version},"
        f" airp {airp.__version__}; baseline: {baseline.__airp_source__}"
    )


def arg_parser(description: str, rounds: int, best_of: int, ops: int) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--rounds", type=int, default=rounds, help=f"rounds; the median ratio over them is reported (default {rounds})")
    parser.add_argument("--best-of", type=int, default=best_of, help=f"runs of each side per round, best kept (default {best_of})")
    parser.add_argument("--ops", type=int, default=ops, help=f"operations per run (default {ops})")
    return parser


# -- the workloads --------------------------------------------------------------------------------

READ = int(IrpMajor.READ)


@dataclass
class SyncStack:
    """Three filters with completion routines over a function driver that completes at once."""

    top: DeviceObject
    call_driver: Callable[..., Awaitable[int]]
    complete_request: Callable[..., None]
    devices: list[DeviceObject] = field(default_factory=list)


def make_sync_stack(
    call_driver: Callable[..., Awaitable[int]] = airp.call_driver,
    complete_request: Callable[..., None] = airp.complete_request,
    *,
    layers: int = 4,
    pend: Callable[[Irp], None] | None = None,
) -> SyncStack:
    """Build the 4-deep stack of figure (a); *call_driver* / *complete_request* may be variants.

    With *pend*, the function driver marks the IRP pending, hands it to ``pend(irp)`` and returns
    STATUS_PENDING instead of completing it.
    """

    def on_complete(device: DeviceObject | None, irp: Irp, context: Any) -> int:
        if irp.pending_returned:
            irp.mark_pending()
        return STATUS_CONTINUE_COMPLETION

    class Filter(airp.Driver):
        @airp.dispatch(IrpMajor.READ)
        async def read(self, device: DeviceObject, irp: Irp) -> int:
            irp.copy_current_stack_location_to_next()
            irp.set_completion_routine(on_complete)
            return await call_driver(device.lower_device, irp)

    class Function(airp.Driver):
        @airp.dispatch(IrpMajor.READ)
        async def read(self, device: DeviceObject, irp: Irp) -> int:
            complete_request(irp, STATUS_SUCCESS, 1)
            return STATUS_SUCCESS

    class PendingFunction(airp.Driver):
        @airp.dispatch(IrpMajor.READ)
        async def read(self, device: DeviceObject, irp: Irp) -> int:
            irp.mark_pending()
            assert pend is not None
            pend(irp)
            return STATUS_PENDING

    io = airp.IoManager()
    bottom = io.create_device(PendingFunction() if pend is not None else Function())
    devices = [bottom]
    top = bottom
    filt = Filter()
    for _ in range(layers - 1):
        upper = io.create_device(filt)
        attach_device(upper, top)
        devices.append(upper)
        top = upper
    assert top.stack_size == layers
    return SyncStack(top, call_driver, complete_request, devices)


def sync_runner(stack: SyncStack, ops: int, *, await_irp: bool, watch: Callable[[Irp], Irp] | None = None) -> Callable[[], Awaitable[float]]:
    """Figure (a)'s loop, shaped like the baseline's: a fresh IRP per iteration, top location filled."""
    top = stack.top
    call_driver = stack.call_driver
    n = top.stack_size

    if watch is not None:

        async def run_traced() -> float:
            t0 = time.perf_counter()
            for i in range(ops):
                irp = watch(Irp(n))
                loc = irp.next_stack_location
                loc.major = READ
                loc.parameters = i
                await call_driver(top, irp)
                await irp
            return per_op(t0, ops)

        return run_traced

    if await_irp:

        async def run_and_await() -> float:
            t0 = time.perf_counter()
            for i in range(ops):
                irp = Irp(n)
                loc = irp.next_stack_location
                loc.major = READ
                loc.parameters = i
                await call_driver(top, irp)
                await irp
            return per_op(t0, ops)

        return run_and_await

    async def run() -> float:
        t0 = time.perf_counter()
        for i in range(ops):
            irp = Irp(n)
            loc = irp.next_stack_location
            loc.major = READ
            loc.parameters = i
            await call_driver(top, irp)
        return per_op(t0, ops)

    return run


def check_sync_stack(stack: SyncStack) -> None:
    """Fail loudly if the workload does not do what it claims (completes synchronously, 4 routines)."""

    async def once() -> None:
        irp = Irp(stack.top.stack_size)
        irp.next_stack_location.major = READ
        status = await stack.call_driver(stack.top, irp)
        assert status == STATUS_SUCCESS, status
        assert irp.completed
        assert not irp.pending_returned
        assert (await irp).information == 1

    asyncio.run(once())


# -- monitor branches removed, for figure (d) ------------------------------------------------------


class _StripMonitor:
    """Take the tracing branches out of a function body.

    Removes ``<name> = irp._monitor`` and resolves every ``if <name> is None`` / ``if <name> is not
    None`` to the untraced branch.  An ``if <name> is None:`` block that ends in ``return`` makes
    the statements after it (the traced path) unreachable: they are dropped too.
    """

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.removed = 0

    def _monitor_test(self, test: ast.expr) -> bool | None:
        """True for ``<monitor> is None``, False for ``<monitor> is not None``, else None."""
        if (
            isinstance(test, ast.Compare)
            and isinstance(test.left, ast.Name)
            and test.left.id in self.names
            and len(test.ops) == 1
            and isinstance(test.comparators[0], ast.Constant)
            and test.comparators[0].value is None
        ):
            if isinstance(test.ops[0], ast.Is):
                return True
            if isinstance(test.ops[0], ast.IsNot):
                return False
        return None

    def block(self, stmts: list[ast.stmt]) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for stmt in stmts:
            if (
                isinstance(stmt, ast.Assign)
                and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name)
                and isinstance(stmt.value, ast.Attribute)
                and stmt.value.attr == "_monitor"
            ):
                self.names.add(stmt.targets[0].id)
                self.removed += 1
                continue
            if isinstance(stmt, ast.If):
                kind = self._monitor_test(stmt.test)
                if kind is not None:
                    self.removed += 1
                    kept = self.block(stmt.body if kind else stmt.orelse)
                    out.extend(kept)
                    if kept and isinstance(kept[-1], (ast.Return, ast.Raise)):
                        return out  # what follows is the traced path only
                    continue
            for name, value in ast.iter_fields(stmt):
                if isinstance(value, list) and value and all(isinstance(v, ast.stmt) for v in value):
                    kept = self.block(value)
                    setattr(stmt, name, kept if kept or name in ("orelse", "finalbody") else [ast.Pass()])
            out.append(stmt)
        return out


def recompiled(module: ModuleType, name: str, *, strip_monitor: bool) -> FunctionType:
    """*module*.*name* recompiled from its current source, with the tracing branches taken out or not.

    Both variants are compiled the same way (a fresh function in a copy of the module's globals, so
    the real module is untouched); comparing them isolates the branches.  With *strip_monitor*,
    raises if the function has no such branch or still mentions the monitor afterwards, so a change
    in the source that this transformation no longer understands cannot go unnoticed.
    """
    source = inspect.getsource(module)
    tree = ast.parse(source)
    func = next(n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name)
    if strip_monitor:
        stripper = _StripMonitor()
        func.body = stripper.block(func.body)
        if not stripper.removed:
            raise RuntimeError(f"{module.__name__}.{name}: found no monitor branch to remove")
        leftover = [n.id for n in ast.walk(func) if isinstance(n, ast.Name) and n.id in stripper.names]
        leftover += [n.attr for n in ast.walk(func) if isinstance(n, ast.Attribute) and n.attr == "_monitor"]
        if leftover:
            raise RuntimeError(f"{module.__name__}.{name}: monitor still referenced after stripping ({leftover})")
    new_module = ast.Module(body=[func], type_ignores=[])
    ast.fix_missing_locations(new_module)
    namespace = dict(vars(module))
    label = "without monitor" if strip_monitor else "recompiled"
    exec(compile(new_module, f"<{module.__name__}.{name} {label}>", "exec"), namespace)
    fn = namespace[name]
    assert isinstance(fn, FunctionType)
    return fn


def bench_backends() -> list[str]:
    backends = ["asyncio"]
    try:
        import trio  # noqa: F401
    except ImportError:
        print("NOTE: trio is not installed; trio figures skipped", file=sys.stderr)
    else:
        backends.append("trio")
    return backends
