"""The IRP monitor: what each layer did with each IRP (DESIGN layer 4, python-notes "What IRP monitors show").

The library never configures structlog: these tests hand the monitor a fake logger, and a structlog
logger built with ``structlog.wrap_logger`` and a list-collecting processor.
"""

from __future__ import annotations

import gc
import logging
import re
import traceback
import warnings
from collections.abc import MutableMapping
from typing import Any

import anyio
import pytest
import structlog

from airp import (
    STATUS_CONTINUE_COMPLETION,
    STATUS_PENDING,
    STATUS_SUCCESS,
    DeviceFlags,
    DeviceObject,
    Driver,
    IoManager,
    Irp,
    IrpMajor,
    IrpMonitor,
    TraceRecord,
    attach_device,
    call_driver,
    complete_request,
    dispatch,
    format_trace,
)


class Disk(Driver):
    """Completes everything at once, or keeps READs pending when ``pend`` is set."""

    def __init__(self) -> None:
        super().__init__("Disk")
        self.pend = False
        self.held: list[Irp] = []
        self.pended: anyio.Event | None = None

    @dispatch(IrpMajor.CREATE, IrpMajor.CLEANUP, IrpMajor.CLOSE)
    async def simple(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS)
        return STATUS_SUCCESS

    @dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        if self.pend:
            irp.mark_pending()
            self.held.append(irp)
            if self.pended is not None:
                self.pended.set()
            return STATUS_PENDING
        complete_request(irp, STATUS_SUCCESS, irp.current_stack_location.parameters.length)
        return STATUS_SUCCESS


class Filter(Driver):
    """Copies READ down with a completion routine; passes everything else through."""

    pass_through = True

    def __init__(self) -> None:
        super().__init__("Filter")

    @dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        irp.copy_current_stack_location_to_next()
        irp.set_completion_routine(on_read_done)
        assert device.lower_device is not None
        return await call_driver(device.lower_device, irp)


def on_read_done(device: DeviceObject | None, irp: Irp, context: Any) -> int:
    if irp.pending_returned:
        irp.mark_pending()
    return STATUS_CONTINUE_COMPLETION


def build(monitor: IrpMonitor | None) -> tuple[IoManager, Disk]:
    io = IoManager(monitor=monitor)
    disk = Disk()
    bottom = io.create_device(disk, "disk", flags=DeviceFlags.BUFFERED_IO)
    attach_device(io.create_device(Filter(), "filter"), bottom)
    return io, disk


def summary(records: list[TraceRecord]) -> list[tuple[str, str | None, int, str | None]]:
    return [(r.event, r.device, r.location, r.status.name if r.status is not None else None) for r in records]


class ListLogger:
    """The smallest logger the monitor accepts: structlog's ``info(event, **fields)``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.calls.append((event, fields))


# -- records per layer ------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_monitor_records_dispatch_complete_routine_done_and_return_per_layer() -> None:
    """3 / 5.2: down through each layer, completed at the bottom, the filter's routine on the way up."""
    monitor = IrpMonitor()
    io, _ = build(monitor)
    async with io.open("disk") as handle:
        request = await handle.read_overlapped(2)
        assert await request == b"\x00\x00"
    records = monitor.for_irp(request.irp)
    assert summary(records)[:5] == [
        ("dispatch", "filter", 2, None),
        ("dispatch", "disk", 1, None),
        ("complete", "disk", 1, "STATUS_SUCCESS"),
        ("routine", "filter", 2, "STATUS_SUCCESS"),
        ("done", None, 3, "STATUS_SUCCESS"),
    ]
    assert [(r.event, r.device, r.status) for r in records[5:]] == [
        ("return", "disk", STATUS_SUCCESS),
        ("return", "filter", STATUS_SUCCESS),
    ]
    assert {r.irp for r in records} == {request.irp._trace_id}
    assert records[0].driver == "Filter"
    assert records[1].driver == "Disk"
    assert records[0].major == "READ"
    assert "completion routine on_read_done armed above" in records[1].note
    assert records[3].note == "on_read_done"
    assert records[4].note == "completed synchronously"
    assert records[4].information == 2
    assert records[5].note == "completed before returning"
    assert request.irp._monitor is monitor


@pytest.mark.anyio
async def test_return_records_carry_the_location_the_dispatch_routine_had() -> None:
    """3: a "return" record names the location of the dispatch routine that returned, also when the
    IRP completed before the routines returned (the usual synchronous case)."""
    monitor = IrpMonitor()
    io, _ = build(monitor)
    async with io.open("disk") as handle:
        request = await handle.read_overlapped(2)
    returns = [r for r in monitor.for_irp(request.irp) if r.event == "return"]
    assert [(r.device, r.location, r.major) for r in returns] == [("disk", 1, "READ"), ("filter", 2, "READ")]


@pytest.mark.anyio
async def test_monitor_records_a_pended_irp() -> None:
    """5.4: the trace shows the pending return first, the completion walk later."""
    monitor = IrpMonitor()
    io, disk = build(monitor)
    disk.pended = anyio.Event()
    async with io.open("disk") as handle:
        disk.pend = True
        request = await handle.read_overlapped(1)
        disk.pend = False
        assert summary(monitor.for_irp(request.irp)) == [
            ("dispatch", "filter", 2, None),
            ("dispatch", "disk", 1, None),
            ("return", "disk", 1, "STATUS_PENDING"),
            ("return", "filter", 2, "STATUS_PENDING"),
        ]
        assert monitor.for_irp(request.irp)[2].note == "pended: the IRP is still in flight"
        complete_request(disk.held.pop(), STATUS_SUCCESS, 1)
        await request
    records = monitor.for_irp(request.irp)
    assert summary(records)[4:] == [
        ("complete", "disk", 1, "STATUS_SUCCESS"),
        ("routine", "filter", 2, "STATUS_SUCCESS"),
        ("done", None, 3, "STATUS_SUCCESS"),
    ]
    assert records[-1].note == "pending was returned"


@pytest.mark.anyio
async def test_pass_through_layer_is_traced_as_skipped() -> None:
    """4: a skipped location shows as the same location number handed down."""
    monitor = IrpMonitor()
    io, _ = build(monitor)
    async with io.open("disk"):
        pass
    create = [r for r in monitor.records if r.major == "CREATE"]
    assert summary(create)[:2] == [("dispatch", "filter", 2, None), ("dispatch", "disk", 2, None)]
    assert create[1].note == "the layer above skipped its location"


# -- loggers --------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_logger_receives_info_with_irp_event_names() -> None:
    """DESIGN: records go to the application's logger as ``info("irp.dispatch", irp=..., ...)``."""
    logger = ListLogger()
    io, _ = build(IrpMonitor(logger))
    async with io.open("disk") as handle:
        await handle.read(2)
    names = [event for event, _ in logger.calls]
    assert names[:2] == ["irp.dispatch", "irp.dispatch"]
    assert {"irp.dispatch", "irp.return", "irp.complete", "irp.routine", "irp.done"} <= set(names)
    _, fields = logger.calls[0]
    assert fields["device"] == "filter"
    assert fields["driver"] == "Filter"
    assert fields["major"] == "CREATE"
    assert fields["location"] == 2
    assert fields["status"] is None
    assert isinstance(fields["irp"], int)
    completes = [fields for event, fields in logger.calls if event == "irp.complete"]
    assert completes[0]["status"] == "STATUS_SUCCESS"  # statuses are logged by name


@pytest.mark.anyio
async def test_structlog_logger_receives_the_records() -> None:
    """python-notes: a privately wrapped structlog logger works; structlog is never configured globally."""
    collected: list[dict[str, Any]] = []

    def collect(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        collected.append(dict(event_dict, method=method))
        return event_dict

    config_before = structlog.get_config()
    logger = structlog.wrap_logger(
        structlog.ReturnLogger(),
        processors=[collect],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
    )
    io, _ = build(IrpMonitor(logger))
    async with io.open("disk") as handle:
        request = await handle.read_overlapped(2)
        assert await request == b"\x00\x00"
    reads = [entry for entry in collected if entry["irp"] == request.irp._trace_id]
    assert [entry["event"] for entry in reads] == [
        "irp.dispatch",
        "irp.dispatch",
        "irp.complete",
        "irp.routine",
        "irp.done",
        "irp.return",
        "irp.return",
    ]
    assert reads[0]["method"] == "info"
    assert reads[0]["device"] == "filter"
    assert structlog.get_config() == config_before


@pytest.mark.anyio
async def test_include_filter_keeps_and_logs_only_matching_records() -> None:
    """python-notes: filter by device, driver or major function."""
    logger = ListLogger()
    monitor = IrpMonitor(logger, include=lambda record: record.driver == "Disk")
    io, _ = build(monitor)
    async with io.open("disk") as handle:
        await handle.read(1)
    # CREATE, READ, CLEANUP, CLOSE: the filter's records and the final "done" ones are left out.
    assert [r.event for r in monitor.records] == ["dispatch", "complete", "return"] * 4
    assert all(r.device == "disk" for r in monitor.records)
    assert [event for event, _ in logger.calls] == [f"irp.{r.event}" for r in monitor.records]


@pytest.mark.anyio
async def test_capacity_keeps_only_the_most_recent_records() -> None:
    """python-notes: a bounded ring of recent records."""
    monitor = IrpMonitor(capacity=3)
    io, _ = build(monitor)
    async with io.open("disk") as handle:
        await handle.read(1)
    assert len(monitor.records) == 3
    assert [r.event for r in monitor.records] == ["done", "return", "return"]
    assert len({r.irp for r in monitor.records}) == 1  # all three from the last IRP, the CLOSE
    monitor.clear()
    assert list(monitor.records) == []


@pytest.mark.parametrize("capacity", [0, -1])
def test_capacity_must_be_positive(capacity: int) -> None:
    """A ring needs room for at least one record."""
    with pytest.raises(ValueError, match="capacity must be positive"):
        IrpMonitor(capacity=capacity)


@pytest.mark.anyio
async def test_format_trace_renders_lines_grouped_by_irp() -> None:
    """python-notes: request/completion pairing by IRP id, one readable line per step."""
    monitor = IrpMonitor()
    io, _ = build(monitor)
    async with io.open("disk") as handle:
        request = await handle.read_overlapped(2)
    text = format_trace(monitor.for_irp(request.irp))
    lines = text.splitlines()
    assert lines[0] == f"IRP #{request.irp._trace_id} READ"
    assert len(lines) == 8
    patterns = [
        r"  -> filter\b.* gets READ at location 2",
        r"  -> disk\b.* gets READ at location 1",
        r"     disk\b.* completes it: STATUS_SUCCESS, information=2",
        r"     \^ completion routine of filter\b.* ran, .*\(on_read_done\)",
        r"  == done: STATUS_SUCCESS, information=2 \(completed synchronously\)",
        r"  <- disk\b.* returns STATUS_SUCCESS",
        r"  <- filter\b.* returns STATUS_SUCCESS",
    ]
    for pattern, line in zip(patterns, lines[1:], strict=True):
        assert re.match(pattern, line), (pattern, line)
    assert len(format_trace(monitor.records).split("IRP #")) == 5  # CREATE, READ, CLEANUP, CLOSE


def test_new_traced_irp_is_watched_by_the_managers_monitor() -> None:
    """DESIGN: IRPs carry a reference to the monitor only when tracing is on."""
    monitor = IrpMonitor()
    irp = IoManager(monitor=monitor).new_traced_irp(2)
    assert irp._monitor is monitor
    assert irp._trace_id > 0
    assert f"#{irp._trace_id}" in repr(irp)
    assert IoManager().new_traced_irp(2)._monitor is None


@pytest.mark.anyio
async def test_no_monitor_means_no_monitor_on_irps() -> None:
    """DESIGN: tracing off costs one ``is None`` test: the IRP's _monitor is None."""
    seen: list[object] = []

    class Spy(Driver):
        @dispatch(IrpMajor.CREATE, IrpMajor.CLEANUP, IrpMajor.CLOSE, IrpMajor.READ)
        async def any(self, device: DeviceObject, irp: Irp) -> int:
            seen.append(irp._monitor)
            complete_request(irp, STATUS_SUCCESS)
            return STATUS_SUCCESS

    io = IoManager()
    io.create_device(Spy(), "spy")
    async with io.open("spy") as handle:
        await handle.read(0)
    assert seen == [None, None, None, None]


# -- misuse is reported the same with tracing on -----------------------------------------------------------


def test_async_completion_routine_is_reported_the_same_with_tracing_on() -> None:
    """12.1: with a monitor, an ``async def`` completion routine still gets the "cannot await" TypeError,
    and its coroutine is closed (no "never awaited" warning)."""

    async def completion(device: DeviceObject | None, irp: Irp, context: Any) -> int:
        return STATUS_CONTINUE_COMPLETION

    monitor = IrpMonitor()
    irp = monitor.watch(Irp(2))
    irp.set_next_stack_location()
    with pytest.raises(TypeError, match="cannot await"):
        irp.set_completion_routine(completion)  # type: ignore[arg-type]
    # Stored by hand, past the check at set time, the walk still reports it.
    loc = irp.next_stack_location
    loc.completion_routine = completion  # type: ignore[assignment]
    loc.control = 0xE0
    irp.set_next_stack_location()
    caught: list[warnings.WarningMessage] = []
    message = complete_and_collect_warnings(irp, caught)
    assert "cannot await" in message
    assert [w for w in caught if issubclass(w.category, RuntimeWarning)] == []  # the coroutine was closed


def test_dispatch_returning_non_status_is_reported_the_same_with_tracing_on() -> None:
    """3.5: with a monitor, a dispatch routine returning a non-status is still a TypeError naming the driver."""

    class Broken(Driver):
        @dispatch(IrpMajor.READ)
        async def read(self, device: DeviceObject, irp: Irp) -> Any:
            complete_request(irp, STATUS_SUCCESS)
            return "done"

    device = DeviceObject(Broken(), "broken")
    irp = IrpMonitor().watch(Irp(1))
    irp.next_stack_location.major = IrpMajor.READ
    coro = call_driver(device, irp)
    with pytest.raises(TypeError, match="the dispatch routine of <Driver Broken>"):
        coro.send(None)


def complete_and_collect_warnings(irp: Irp, caught: list[warnings.WarningMessage]) -> str:
    """complete_request(irp), expecting a TypeError; return its message.

    The frames of the traceback are cleared and garbage collected inside ``catch_warnings``, so a
    coroutine left unclosed warns here (and is seen by the caller) instead of in a later test.
    """
    with warnings.catch_warnings(record=True) as recorded:
        warnings.simplefilter("always")
        try:
            complete_request(irp, STATUS_SUCCESS)
        except TypeError as error:
            message = str(error)
            traceback.clear_frames(error.__traceback__)
        else:
            message = "no TypeError"
        gc.collect()
    caught.extend(recorded)
    return message
