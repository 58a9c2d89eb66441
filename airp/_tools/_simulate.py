"""``airp simulate``: run a described driver stack under a workload and report what it did.

The stack comes from a description file (:mod:`._simulate_description`), is built by the Plug and
Play manager (``io.add_device`` / ``start_device``) and opened by name.  Requesters send reads,
writes and device controls as the workload says; :class:`SimulationRecorder`, a set of monitor
hooks, times every request from the moment it is sent to the moment its completion reaches the
top, every layer from its dispatch to the moment the completion walk passes back up through it,
and every wait in a queue.  The run is on airp's virtual clock unless ``real_time`` is asked for.

The virtual clocks are the async shell's (:mod:`airp._shell._run_clock`); arrivals and samples
wait with its :func:`~airp.delay`, and each timed request is accounted for by a done callback
(:meth:`~airp.Overlapped.add_done_callback`) when its completion reaches the top: no task per
request, in either workload.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import contextvars
import json
import math
import random
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import anyio

from .._iomanager._manager import FileHandle, IoManager
from .._iomanager._requests import Overlapped
from .._machine._errors import NtStatusError
from .._machine._monitor import MonitorHooks, combine_hooks
from .._machine._status import STATUS_MORE_PROCESSING_REQUIRED, NtStatus
from .._shell._run_clock import delay, virtual_anyio_backend
from .._shell._virtual_time import VirtualTimeDeadlock
from ._simulate_description import SimulationDescription, SimulationDescriptionError, build_drivers, load_simulation

if TYPE_CHECKING:
    from .._machine._device import DeviceObject
    from .._machine._driver import Driver
    from .._machine._irp import Irp

__all__ = [
    "SimulationRecorder",
    "SimulationReport",
    "add_simulate_arguments",
    "run_simulate_command",
    "simulate",
]

# Two-sided 95% quantiles of Student's t by degrees of freedom, for the batch-means intervals.
_T95 = {
    1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
    11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
    20: 2.086, 24: 2.064, 29: 2.045, 39: 2.023, 59: 2.001, 99: 1.984,
}


def t95(degrees: int) -> float:
    """The two-sided 95% quantile of Student's t (the table's nearest lower entry; 1.96 past 99).

    :param degrees: degrees of freedom, at least 1.
    :returns: the quantile.
    """
    if degrees > 99:
        return 1.96
    return _T95[max(k for k in _T95 if k <= degrees)]


# -- the recorder ---------------------------------------------------------------------------------------


@dataclass
class _Request:
    sent: float
    major: str
    measured: bool
    # [device, dispatched at, passed back up at or None], top first.
    layers: list[list[Any]] = field(default_factory=list)
    queued: dict[tuple[DeviceObject, str | None], float] = field(default_factory=dict)
    # The IRP the request was built as, once the I/O manager has had it watched.
    irp: Irp | None = None


#: The request a requester task is about to send: the recorder takes it when the IRP is built.
_sending: contextvars.ContextVar[_Request | None] = contextvars.ContextVar("airp_simulate_sending", default=None)


#: NtStatus -> its name, filled as statuses are seen.
_STATUS_NAMES: dict[int, str] = {}


class SimulationRecorder:
    """Monitor hooks that time requests, layers and queues (``IoManager(monitor=...)``).

    Only requests sent through :meth:`send` are timed; other IRPs (creates, closes, PnP) pass
    through at the cost of one dictionary look-up per hook.  A timed request is accounted for
    (counted, its latency and layer times kept, *on_done* called) by a done callback on its
    :class:`~airp.Overlapped`, in the completion walk that reaches the top, as the ``completed``
    hook would be; unlike that hook, the callback also runs when the request's final stage raises
    a bug check, so such a request is counted as completed, not lost.

    :param labels: a name for each device (``"1 sim-disk"``), for the report.
    :param on_done: called with each timed request's final status when its completion reaches the top.
    """

    def __init__(self, labels: Mapping[DeviceObject, str], on_done: Callable[[NtStatus], None] | None = None) -> None:
        self.labels = dict(labels)
        self.on_done = on_done
        self.requests: dict[Irp, _Request] = {}
        #: Per major function: (send order, seconds in system) of measured requests.
        self.latencies: dict[str, list[tuple[int, float]]] = defaultdict(list)
        self.layer_times: dict[str, list[float]] = defaultdict(list)
        self.queue_waits: dict[str, list[float]] = defaultdict(list)
        self.depth: Counter[tuple[DeviceObject, str | None]] = Counter()
        self.max_depth: Counter[str] = Counter()
        self.statuses: Counter[str] = Counter()
        self.sent = 0
        self.done = 0
        self.first_sent: float | None = None
        self.last_completed: float | None = None

    def _label(self, device: DeviceObject) -> str:
        # repr only for a device without a label: a device's repr walks its stack.
        label = self.labels.get(device)
        return label if label is not None else repr(device)

    def queue_label(self, device: DeviceObject, queue: str | None) -> str:
        """The report's name for *queue* of *device*."""
        return f"{self._label(device)} / {queue or 'StartIo'}"

    async def send(self, call: Callable[[], Awaitable[Overlapped[Any]]], major: str, measured: bool) -> Overlapped[Any] | None:
        """Send one request: *call* is the handle's ``*_overlapped`` call.

        Returns once the dispatch routine has returned; the request is accounted for when it
        completes, by a done callback (at once if it already has).  An error status is counted
        like any other, not raised.

        On cancellation: as the handle's call (the request is cancelled and waited for).

        :returns: the request, to await if the caller wants to; ``None`` if the handle refused to
            send it (an :class:`~airp.NtStatusError` before any IRP was built: closed handle,
            deleted device).
        """
        now = anyio.current_time()
        request = _Request(now, major, measured)
        if self.first_sent is None:
            self.first_sent = now
        self.sent += 1
        token = _sending.set(request)
        try:
            sent = await call()
        except BaseException as error:
            # Sent, and then something raised (a bug check on what the dispatch routine
            # returned): no callback was added, so a request that has completed is accounted
            # for here; one still held stays outstanding (lost).
            irp = request.irp
            if irp is not None and irp.completed and irp in self.requests:
                self._account(irp)
            if isinstance(error, NtStatusError):
                return None
            raise
        finally:
            _sending.reset(token)
        sent.add_done_callback(self._request_done)
        return sent

    @property
    def outstanding(self) -> int:
        """Timed requests sent and not completed."""
        return len(self.requests)

    # MonitorHooks ------------------------------------------------------------------------------

    def watch(self, irp: Irp) -> Irp:
        irp._monitor = self
        request = _sending.get()
        if request is not None:
            _sending.set(None)
            request.irp = irp
            self.requests[irp] = request
        return irp

    def linked(self, child: Irp, parent: Irp) -> None:
        pass

    def dispatching(self, irp: Irp, device: DeviceObject) -> None:
        request = self.requests.get(irp)
        if request is not None:
            request.layers.append([device, anyio.current_time(), None])

    def dispatched(self, irp: Irp, device: DeviceObject, status: NtStatus) -> NtStatus:
        return status

    def queued(self, irp: Irp, device: DeviceObject, queue: str | None) -> None:
        request = self.requests.get(irp)
        if request is not None:
            key = (device, queue)
            request.queued[key] = anyio.current_time()
            depth = self.depth[key] = self.depth[key] + 1
            label = self.queue_label(device, queue)
            if depth > self.max_depth[label]:
                self.max_depth[label] = depth

    def dequeued(self, irp: Irp, device: DeviceObject, queue: str | None) -> None:
        request = self.requests.get(irp)
        if request is not None:
            key = (device, queue)
            since = request.queued.pop(key, None)
            if since is not None:
                self.depth[key] -= 1
                if request.measured:
                    self.queue_waits[self.queue_label(device, queue)].append(anyio.current_time() - since)

    def completing(self, irp: Irp) -> None:
        pass

    def routine_ran(self, irp: Irp, owner: DeviceObject | None, routine: object, result: int) -> None:
        # A routine that stops the walk (its driver goes on with the IRP) has seen the IRP come
        # back up through every layer below its own; the layers from it up are still holding it.
        if result != STATUS_MORE_PROCESSING_REQUIRED:
            return
        request = self.requests.get(irp)
        if request is None:
            return
        now = anyio.current_time()
        layers = request.layers
        for index in range(len(layers) - 1, -1, -1):
            if layers[index][0] is owner:
                for entry in layers[index + 1 :]:
                    if entry[2] is None:
                        entry[2] = now
                return

    def completed(self, irp: Irp) -> None:
        # Timed requests are accounted for by their done callback (_request_done), which runs
        # in the same walk just before this hook, and also after a final-stage bug check.
        pass

    def _request_done(self, request: Overlapped[Any]) -> None:
        # The done callback of every timed request.
        self._account(request.irp)

    def _account(self, irp: Irp) -> None:
        request = self.requests.pop(irp, None)
        if request is None:
            return
        now = anyio.current_time()
        self.done += 1
        self.last_completed = now
        for key in request.queued:  # cancelled while it waited: it left the queue
            self.depth[key] -= 1
        status = irp.status
        if type(status) is not NtStatus:
            status = NtStatus(status)
        # Status names looked up once each: the enum's name is a Python-level property.
        name = _STATUS_NAMES.get(status)
        if name is None:
            name = _STATUS_NAMES[status] = status.name
        self.statuses[name] += 1
        if request.measured:
            self.latencies[request.major].append((self.done, now - request.sent))
            for device, dispatched, passed in request.layers:
                self.layer_times[self._label(device)].append((now if passed is None else passed) - dispatched)
        if self.on_done is not None:
            self.on_done(status)

    def cancelled(self, irp: Irp, routine: object, reason: str | None) -> None:
        pass

    def freed(self, irp: Irp) -> None:
        pass

    def reused(self, irp: Irp) -> None:
        pass


# -- the report -------------------------------------------------------------------------------------------


def _percentile(ordered: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of sorted values."""
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def latency_summary(values: Sequence[float], batches: int) -> dict[str, Any]:
    """Count, mean, its batch-means 95% interval, p50, p90, p99 and max of *values* (in order).

    The interval splits the values, in the order the requests were sent, into *batches*
    contiguous batches and uses Student's t on their means: successive times in a queue are
    correlated, so the plain standard error would be far too small.

    :param values: seconds, in send order.
    :param batches: how many batches (fewer if there are fewer values).
    :returns: a JSON-ready mapping; ``ci95`` is ``None`` with fewer than two batches.
    """
    count = len(values)
    if not count:
        return {"count": 0}
    ordered = sorted(values)
    batches = min(batches, count)
    half: float | None = None
    if batches >= 2:
        size = count // batches
        means = [statistics.fmean(values[k * size : (k + 1) * size]) for k in range(batches)]
        half = t95(batches - 1) * statistics.stdev(means) / math.sqrt(batches)
    return {
        "count": count,
        "mean": statistics.fmean(values),
        "ci95": half,
        "p50": _percentile(ordered, 0.50),
        "p90": _percentile(ordered, 0.90),
        "p99": _percentile(ordered, 0.99),
        "max": ordered[-1],
    }


@dataclass
class SimulationReport:
    """What a run did.  :meth:`as_dict` is the ``--json`` file; :meth:`format` the printed table.

    :ivar name: the description's name.
    :ivar source: its file.
    :ivar backend: ``"asyncio"`` or ``"trio"``.
    :ivar clock: ``"virtual"`` or ``"real"``.
    :ivar seed: the workload's seed.
    :ivar sent: requests sent.
    :ivar completed: requests whose completion reached the top.
    :ivar lost: requests sent and never completed when the run ended (must be 0).
    :ivar elapsed: seconds (of the run's clock) from the first request sent to the last completed.
    :ivar throughput: completed requests per second over *elapsed*.
    :ivar latency: per major function and ``"all"``: the summary of :func:`latency_summary`
        over measured requests (after the warm-up).
    :ivar layers: per device (bottom first): the same summary of the time from the layer's
        dispatch to the moment the completion passed back up through it.
    :ivar queues: per queue: the summary of the waits, the deepest seen, and the mean of the samples.
    :ivar depth_series: samples ``{"time": t, "in_flight": n, "queues": {name: depth}}``.
    :ivar statuses: final status name -> count.
    :ivar drivers: each driver's ``simulation_statistics()``, for those that have one.
    :ivar ended: ``"completed"``, or why the run ended early.
    :ivar wall_seconds: real seconds the run took (not a result: how long the machine needed).
    """

    name: str
    source: str
    backend: str
    clock: str
    seed: int
    sent: int
    completed: int
    lost: int
    elapsed: float
    throughput: float
    latency: dict[str, dict[str, Any]]
    layers: dict[str, dict[str, Any]]
    queues: dict[str, dict[str, Any]]
    depth_series: list[dict[str, Any]]
    statuses: dict[str, int]
    drivers: dict[str, dict[str, Any]]
    ended: str
    wall_seconds: float

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data.

        :returns: every field, by name.
        """
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def write_json(self, path: str | Path) -> None:
        """Write :meth:`as_dict` to *path* as JSON.

        :raises OSError: if the file cannot be written.
        """
        Path(path).write_text(json.dumps(self.as_dict(), indent=2) + "\n", encoding="utf-8")

    def format(self) -> str:
        """The report as a readable table.

        :returns: the text, lines ending in newlines.
        """
        lines = [
            f"airp simulate: {self.name} ({self.source})",
            f"  {self.backend}, {self.clock} clock, seed {self.seed}: {self.ended}",
            f"  requests sent {self.sent}, completed {self.completed}, lost {self.lost}",
            f"  elapsed {self.elapsed:.6g} s, throughput {self.throughput:.6g} requests/s"
            f" (wall {self.wall_seconds:.2f} s)",
            "",
        ]

        def table(title: str, rows: Mapping[str, Mapping[str, Any]]) -> None:
            lines.append(f"  {title:<34} {'count':>8} {'mean':>10} {'±95%':>9} {'p50':>10} {'p90':>10} {'p99':>10} {'max':>10}")
            for name, row in rows.items():
                if not row.get("count"):
                    lines.append(f"  {name:<34} {0:>8}")
                    continue
                ci = "-" if row["ci95"] is None else f"{row['ci95']:.3g}"
                lines.append(
                    f"  {name:<34} {row['count']:>8} {row['mean']:>10.4g} {ci:>9} {row['p50']:>10.4g}"
                    f" {row['p90']:>10.4g} {row['p99']:>10.4g} {row['max']:>10.4g}"
                )
            lines.append("")

        table("latency (s) by function", self.latency)
        table("time held (s) by layer, bottom first", self.layers)
        if self.queues:
            table("queue wait (s)", {name: q["wait"] for name, q in self.queues.items()})
            for name, q in self.queues.items():
                lines.append(f"  depth of {name}: mean of samples {q['depth_mean']:.3g}, deepest {q['depth_max']}")
            lines.append("")
        lines.append("  statuses: " + ", ".join(f"{name} {count}" for name, count in sorted(self.statuses.items())))
        for driver, stats in self.drivers.items():
            shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in stats.items())
            lines.append(f"  {driver}: {shown}")
        return "\n".join(lines) + "\n"


# -- progress -------------------------------------------------------------------------------------------


class _Progress:
    """A rich progress bar on stderr, or plain lines every tenth of the run when rich is missing."""

    def __init__(self, total: float, unit: str, enabled: bool, stream: TextIO | None = None) -> None:
        self.total = total
        self.unit = unit
        self.stream = stream or sys.stderr
        self.bar: Any = None
        self.next_line = 0.1
        self.enabled = enabled
        if not enabled:
            return
        try:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
        except ImportError:
            return
        columns = [TextColumn("simulating"), BarColumn(), TextColumn(f"{{task.completed:.0f}}/{total:g} {unit}")]
        self.bar = Progress(*columns, TimeElapsedColumn(), console=Console(file=self.stream), transient=True)
        self.task = self.bar.add_task("simulate", total=total)
        self.bar.start()

    def update(self, done: float) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(self.task, completed=min(done, self.total))
        elif done >= self.next_line * self.total:
            while self.next_line * self.total <= done:
                self.next_line += 0.1
            print(f"airp simulate: {done:.6g} of {self.total:g} {self.unit}", file=self.stream, flush=True)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


# -- running -------------------------------------------------------------------------------------------


@dataclass
class _RunState:
    description: SimulationDescription
    drivers: list[Driver]
    monitor: MonitorHooks | None
    progress: bool
    recorder: SimulationRecorder | None = None
    series: list[dict[str, Any]] = field(default_factory=list)
    frozen: tuple[int, int, int] | None = None  # sent, completed, outstanding when the workload ended


async def _run(state: _RunState) -> None:
    description = state.description
    recorder = SimulationRecorder({})
    state.recorder = recorder
    io = IoManager(monitor=combine_hooks(recorder, state.monitor))
    f = description.function_index
    loaded = [io.load_driver(driver, name=f"{i} {driver.name}") for i, driver in enumerate(state.drivers)]
    async with io:
        node = await io.add_device(
            description.hardware_id,
            name=description.device,
            function=loaded[f],
            lower_filters=tuple(loaded[:f]),
            upper_filters=tuple(loaded[f + 1 :]),
        )
        await io.start_device(node)
        for position, device in enumerate(node.devices):
            recorder.labels[device] = "0 PDO (root bus)" if position == 0 else f"{position} {device.driver.name}"
        async with io.open(description.device) as handle:
            try:
                await _drive(handle, state, recorder)
            finally:
                state.frozen = (recorder.sent, recorder.done, recorder.outstanding)


async def _drive(handle: FileHandle, state: _RunState, recorder: SimulationRecorder) -> None:
    """Send the workload through *handle* and wait until every request has completed."""
    description = state.description
    workload = description.workload
    rng = random.Random(workload.seed)
    majors = [name for name in ("read", "write", "device_control") if workload.mix.get(name, 0) > 0]
    cumulative: list[float] = []
    for name in majors:
        cumulative.append((cumulative[-1] if cumulative else 0.0) + workload.mix[name])
    weights_total = cumulative[-1]
    zeros = bytes(max(workload.sizes))
    start = anyio.current_time()
    by_time = workload.requests is None
    total = workload.duration if by_time else workload.requests
    assert total is not None
    progress = _Progress(total, "s" if by_time else "requests", state.progress)
    all_done = anyio.Event()
    sending_over = False
    slots = anyio.Semaphore(workload.concurrency) if workload.concurrency and workload.arrival != "closed" else None
    every = max(1, (workload.requests or 0) // description.report.samples)

    def sample() -> None:
        now = anyio.current_time()
        queues = {recorder.queue_label(device, name): depth for (device, name), depth in recorder.depth.items()}
        state.series.append({"time": now - start, "in_flight": recorder.outstanding, "queues": queues})

    def on_done(status: NtStatus) -> None:
        if slots is not None:
            slots.release()
        if not by_time and recorder.done % every == 0:
            sample()
            progress.update(recorder.done)
        if sending_over and recorder.outstanding == 0:
            all_done.set()

    recorder.on_done = on_done

    def next_request() -> tuple[Callable[[], Awaitable[Overlapped[Any]]], str]:
        major = majors[bisect.bisect_right(cumulative, rng.random() * weights_total)] if len(majors) > 1 else majors[0]
        size = workload.sizes[0] if len(workload.sizes) == 1 else rng.choice(workload.sizes)
        offset = (rng.randrange(workload.blocks) if workload.blocks > 1 else 0) * workload.block_size
        if major == "read":
            return (lambda: handle.read_overlapped(size, offset=offset)), major
        if major == "write":
            data = memoryview(zeros)[:size]
            return (lambda: handle.write_overlapped(data, offset=offset)), major
        code, length = workload.ioctl, workload.ioctl_output
        assert code is not None
        return (lambda: handle.device_control_overlapped(code, output_length=length)), major

    def more(index: int) -> bool:
        if by_time:
            assert workload.duration is not None
            return anyio.current_time() - start < workload.duration
        assert workload.requests is not None
        return index < workload.requests

    async def sampler() -> None:
        assert workload.duration is not None
        interval = workload.duration / description.report.samples
        while True:
            await delay(interval)
            sample()
            progress.update(anyio.current_time() - start)

    async with anyio.create_task_group() as tg:
        if by_time:
            tg.start_soon(sampler)
        sent = 0
        try:
            if workload.arrival == "closed":

                async def requester() -> None:
                    # One task per slot, each with one request in flight: it waits for its
                    # request before sending the next (the accounting is the request's callback).
                    nonlocal sent
                    while more(sent):
                        index = sent
                        sent += 1
                        call, major = next_request()
                        request = await recorder.send(call, major, index >= workload.warmup)
                        if request is not None:
                            with contextlib.suppress(NtStatusError):  # counted with its status
                                await request

                assert workload.concurrency is not None
                async with anyio.create_task_group() as requesters:
                    for _ in range(workload.concurrency):
                        requesters.start_soon(requester)
            else:
                assert workload.rate is not None
                mean_gap = 1.0 / workload.rate
                poisson = workload.arrival == "poisson"
                while True:
                    await delay(rng.expovariate(workload.rate) if poisson else mean_gap)
                    if not more(sent):
                        break
                    if slots is not None:
                        await slots.acquire()
                    call, major = next_request()
                    await recorder.send(call, major, sent >= workload.warmup)
                    sent += 1
            sending_over = True
            if recorder.outstanding:
                await all_done.wait()
        finally:
            progress.stop()
        tg.cancel_scope.cancel()
    if not by_time:
        sample()


def _report(state: _RunState, backend: str, real_time: bool, ended: str, wall: float) -> SimulationReport:
    description = state.description
    recorder = state.recorder
    batches = description.report.batches
    drivers: dict[str, dict[str, Any]] = {}
    for index, driver in enumerate(state.drivers):
        stats = getattr(driver, "simulation_statistics", None)
        if callable(stats):
            drivers[f"{index + 1} {driver.name}"] = dict(stats())
    if recorder is None:  # the run failed before the stack existed
        return SimulationReport(
            description.name, description.source, backend, "real" if real_time else "virtual", description.workload.seed,
            0, 0, 0, 0.0, 0.0, {}, {}, {}, [], {}, drivers, ended, wall,
        )
    sent, completed, outstanding = state.frozen or (recorder.sent, recorder.done, recorder.outstanding)
    latency: dict[str, dict[str, Any]] = {}
    everything: list[tuple[int, float]] = []
    for major in ("read", "write", "device_control"):
        if major in recorder.latencies:
            pairs = recorder.latencies[major]
            everything.extend(pairs)
            latency[major] = latency_summary([seconds for _, seconds in pairs], batches)
    everything.sort()
    latency["all"] = latency_summary([seconds for _, seconds in everything], batches)
    layer_order = sorted(recorder.layer_times, key=lambda label: int(label.split(" ", 1)[0]))
    layers = {label: latency_summary(recorder.layer_times[label], batches) for label in layer_order}
    queues = {}
    for label in sorted(set(recorder.queue_waits) | set(recorder.max_depth)):
        depths = [s["queues"].get(label, 0) for s in state.series]
        queues[label] = {
            "wait": latency_summary(recorder.queue_waits.get(label, []), batches),
            "depth_max": recorder.max_depth.get(label, 0),
            "depth_mean": statistics.fmean(depths) if depths else 0.0,
        }
    elapsed = 0.0
    if recorder.first_sent is not None and recorder.last_completed is not None:
        elapsed = recorder.last_completed - recorder.first_sent
    return SimulationReport(
        name=description.name,
        source=description.source,
        backend=backend,
        clock="real" if real_time else "virtual",
        seed=description.workload.seed,
        sent=sent,
        completed=completed,
        lost=outstanding,
        elapsed=elapsed,
        throughput=completed / elapsed if elapsed > 0 else 0.0,
        latency=latency,
        layers=layers,
        queues=queues,
        depth_series=state.series,
        statuses=dict(recorder.statuses),
        drivers=drivers,
        ended=ended,
        wall_seconds=wall,
    )


def _find(error: BaseException, kinds: tuple[type[BaseException], ...]) -> BaseException | None:
    if kinds and isinstance(error, kinds):
        return error
    # An exception group (trio delivers the deadlock into the main task's task groups); the
    # builtin BaseExceptionGroup is 3.11+, so it is recognised by its exceptions.
    for inner in getattr(error, "exceptions", ()):
        if isinstance(inner, BaseException):
            found = _find(inner, kinds)
            if found is not None:
                return found
    return None


def simulate(
    description: SimulationDescription,
    *,
    backend: str = "asyncio",
    real_time: bool = False,
    progress: bool = False,
    monitor: MonitorHooks | None = None,
) -> SimulationReport:
    """Run *description* in a new event loop and report what it did.

    On the virtual clock (the default) a deadlock, every request stuck with nothing left to wake
    one, ends the run: the report's ``ended`` says so and ``lost`` counts the requests stuck.

    :param description: a checked description (:func:`load_simulation`), options applied.
    :param backend: ``"asyncio"`` or ``"trio"``.
    :param real_time: run on the wall clock instead of virtual time.
    :param progress: show a progress bar (rich) or progress lines on stderr.
    :param monitor: more hooks to watch every request (an :class:`~airp.IrpMonitor` for a trace).
    :returns: the report.
    :raises SimulationDescriptionError: if a driver refuses its parameters or a plugin is unknown (before
        anything runs), or the backend is unknown.
    """
    if backend not in ("asyncio", "trio"):
        raise SimulationDescriptionError("command line", "--backend", f"expected asyncio or trio, got {backend!r}")
    drivers = build_drivers(description)
    state = _RunState(description, drivers, monitor, progress)
    options: dict[str, Any] = {}
    if real_time:
        name = backend
    else:
        name, options = virtual_anyio_backend(backend)
    ended = "completed"
    wall = time.perf_counter()
    try:
        anyio.run(_run, state, backend=name, backend_options=options)
    except BaseException as error:
        deadlock = _find(error, (VirtualTimeDeadlock,))
        if deadlock is None:
            raise
        ended = f"deadlock: {str(deadlock).splitlines()[0]}"
    return _report(state, backend, real_time, ended, time.perf_counter() - wall)


# -- the command ---------------------------------------------------------------------------------------


def add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``airp simulate``'s arguments to *parser*."""
    parser.add_argument("file", help="the description (TOML): the stack, bottom to top, and the workload")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--requests", type=int, metavar="N", help="send N requests (overrides the file)")
    length.add_argument("--duration", type=float, metavar="T", help="send requests for T seconds (overrides the file)")
    parser.add_argument("--seed", type=int, metavar="S", help="seed of the workload and the drivers' draws (overrides the file)")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio", help="event loop (default asyncio)")
    parser.add_argument("--real-time", action="store_true", help="run on the wall clock instead of virtual time")
    parser.add_argument("--json", metavar="REPORT", help="write the report as JSON")
    parser.add_argument(
        "--trace", metavar="TRACE", help="write the run's IRP trace as Chrome Trace Event JSON (docs/tracing.md)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_simulate_command(args: argparse.Namespace) -> int:
    """Run ``airp simulate`` with parsed *args*.

    :returns: 0, 1 if requests were lost, 2 for a description or option that cannot run (the
        message goes to stderr, without a traceback).
    """
    try:
        description = load_simulation(args.file).with_options(
            requests=args.requests, duration=args.duration, seed=args.seed
        )
        monitor = None
        if args.trace:
            from ._tracing import IrpMonitor

            # The monitor keeps a bounded ring: a long run's trace holds its last records.
            monitor = IrpMonitor()
        report = simulate(
            description, backend=args.backend, real_time=args.real_time, progress=not args.no_progress, monitor=monitor
        )
    except SimulationDescriptionError as error:
        print(f"airp simulate: {error}", file=sys.stderr)
        return 2
    print(report.format(), end="")
    try:
        if args.json:
            report.write_json(args.json)
        if monitor is not None:
            from ._trace_export import write_chrome_trace

            write_chrome_trace(monitor, args.trace)
    except OSError as error:
        print(f"airp simulate: cannot write {error.filename}: {error.strerror}", file=sys.stderr)
        return 2
    if report.lost:
        print(f"airp simulate: {report.lost} requests lost ({report.ended})", file=sys.stderr)
        return 1
    return 0
