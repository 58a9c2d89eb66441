"""The IRP monitor: what each layer did with each IRP, for traces, tests and ``airp demo``.

Tracing is off unless an :class:`IrpMonitor` is given to the :class:`~airp.IoManager`; IRPs then
carry a reference to it.  When it is off, ``call_driver`` and ``complete_request`` pay one ``is
None`` test each and build nothing.

The library never configures structlog: records go to the logger the application passes in (any
object with structlog's ``info(event, **fields)`` method), and to a bounded ring of recent records.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Protocol

from .._machine._codes import IrpMajor
from .._machine._status import STATUS_PENDING, NtStatus

if TYPE_CHECKING:
    from .._machine._device import DeviceObject
    from .._machine._irp import Irp

__all__ = ["IrpMonitor", "TraceLogger", "TraceRecord", "format_trace"]


class TraceLogger(Protocol):
    """What the monitor needs of a logger: structlog's ``BoundLogger.info``."""

    def info(self, event: str, **fields: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class TraceRecord:
    """One thing that happened to one IRP.

    ``event`` is one of:

    - ``"dispatch"``: the IRP went down to ``device`` at stack ``location``;
    - ``"return"``: that dispatch routine returned ``status``;
    - ``"complete"``: the driver of ``device`` completed the IRP with ``status``;
    - ``"routine"``: on the way up, the completion routine of ``device``'s driver ran and returned
      ``status`` (``device`` is ``None`` for the IRP's creator);
    - ``"done"``: the completion walk reached the top; ``status`` is the final status.
    """

    irp: int
    event: str
    location: int
    device: str | None
    driver: str | None
    major: str
    status: NtStatus | None
    information: int
    note: str

    def describe(self) -> str:
        """One readable line about this record."""
        where = self.device or "the requester"
        status = self.status.name if self.status is not None else ""
        if self.device is not None and self.driver != self.device:
            where = f"{where} ({self.driver})"
        if self.event == "dispatch":
            text = f"-> {where} gets {self.major} at location {self.location}"
        elif self.event == "return":
            text = f"<- {where} returns {status}"
        elif self.event == "complete":
            text = f"   {where} completes it: {status}, information={self.information}"
        elif self.event == "routine":
            if self.status == 0:
                status = "STATUS_CONTINUE_COMPLETION"
            text = f"   ^ completion routine of {where} ran, returned {status}"
        else:
            text = f"== done: {status}, information={self.information}"
        return f"{text} ({self.note})" if self.note else text


def _name(device: DeviceObject | None) -> str | None:
    if device is None:
        return None
    return device.name or device.driver.name


def _major(irp: Irp, index: int) -> str:
    # Past the top (the requester's end) the top location still names the request.
    index = min(index, irp.stack_count - 1)
    loc = irp._stack[index]
    major = getattr(loc, "major", 0)
    try:
        return IrpMajor(major).name
    except ValueError:
        return hex(major)


class IrpMonitor:
    """Records what happens to IRPs, layer by layer.

    :param logger: where to send each record as it happens (``logger.info("irp.dispatch",
        irp=..., device=..., ...)``); ``None`` keeps them only in :attr:`records`.
    :param capacity: how many recent records to keep.
    :param include: a predicate on records; those it rejects are neither kept nor logged (filter by
        device, driver or major function).
    """

    def __init__(
        self,
        logger: TraceLogger | None = None,
        *,
        capacity: int = 10_000,
        include: Callable[[TraceRecord], bool] | None = None,
    ) -> None:
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.logger = logger
        self.include = include
        self.records: deque[TraceRecord] = deque(maxlen=capacity)
        self._ids = itertools.count(1)
        self._locations: dict[int, list[int]] = {}

    def watch(self, irp: Irp) -> Irp:
        """Make *irp* report to this monitor (the I/O manager does this for the IRPs it builds)."""
        irp._monitor = self
        if not irp._trace_id:
            irp._trace_id = next(self._ids)
        return irp

    def for_irp(self, irp: Irp | int) -> list[TraceRecord]:
        """The kept records of one IRP (by object or trace number)."""
        number = irp if isinstance(irp, int) else irp._trace_id
        return [r for r in self.records if r.irp == number]

    def clear(self) -> None:
        """Forget the kept records."""
        self.records.clear()

    def _emit(self, irp: Irp, event: str, index: int, device: DeviceObject | None, status: int | None, note: str = "") -> None:
        if not irp._trace_id:
            irp._trace_id = next(self._ids)
        record = TraceRecord(
            irp=irp._trace_id,
            event=event,
            location=index + 1,
            device=_name(device),
            driver=device.driver.name if device is not None else None,
            major=_major(irp, index),
            status=NtStatus(status) if status is not None else None,
            information=irp.information,
            note=note,
        )
        if self.include is not None and not self.include(record):
            return
        self.records.append(record)
        if self.logger is not None:
            fields = asdict(record)
            del fields["event"]  # already in the event name; a second "event" argument is a TypeError
            fields["status"] = record.status.name if record.status is not None else None
            self.logger.info(f"irp.{event}", **fields)

    # -- hooks called by call_driver and complete_request -----------------------------------

    def dispatching(self, irp: Irp, device: DeviceObject) -> None:
        index = irp._index
        loc = irp._stack[index]
        path = self._locations.setdefault(irp._trace_id or id(irp), [])
        notes = []
        skipped = bool(path) and path[-1] == index
        if skipped:
            notes.append("the layer above skipped its location")
        elif path:
            notes.append("passed down with its own location")
        if loc.completion_routine is not None and not skipped:
            notes.append(f"completion routine {getattr(loc.completion_routine, '__name__', '?')} armed above")
        path.append(index)
        self._emit(irp, "dispatch", index, device, None, "; ".join(notes))

    def dispatched(self, irp: Irp, device: DeviceObject, status: NtStatus) -> NtStatus:
        key = irp._trace_id or id(irp)
        path = self._locations.get(key)
        index = path.pop() if path else irp._index
        if not path:
            self._locations.pop(key, None)
        if status == STATUS_PENDING:
            note = "pended: the IRP is still in flight"
        elif irp.completed:
            note = "completed before returning"
        else:
            note = "held by a completion routine"
        self._emit(irp, "return", index, device, status, note)
        return status

    def completing(self, irp: Irp) -> None:
        index = irp._index
        device = irp._stack[index].device if index < irp.stack_count else None
        self._emit(irp, "complete", index, device, irp.status)

    def routine_ran(self, irp: Irp, owner: DeviceObject | None, routine: object, result: int) -> None:
        note = getattr(routine, "__name__", repr(routine))
        if result == 0xC000_0016:
            note += ": the walk stops, the IRP is handed back"
        self._emit(irp, "routine", irp._index, owner, result, note)

    def completed(self, irp: Irp) -> None:
        # The dispatch routines of a synchronously completed IRP have not returned yet: their
        # locations stay recorded until ``dispatched`` pops them.
        note = "pending was returned" if irp.pending_returned else "completed synchronously"
        self._emit(irp, "done", irp.stack_count, None, irp.status, note)

    # Not recorded yet (issue 13 adds records for them).
    def linked(self, child: Irp, parent: Irp) -> None:
        pass

    def queued(self, irp: Irp, device: DeviceObject, queue: str | None) -> None:
        pass

    def dequeued(self, irp: Irp, device: DeviceObject, queue: str | None) -> None:
        pass

    def cancelled(self, irp: Irp, routine: object, reason: str | None) -> None:
        pass

    def freed(self, irp: Irp) -> None:
        pass

    def reused(self, irp: Irp) -> None:
        pass


def format_trace(records: Iterable[TraceRecord]) -> str:
    """Render records as indented lines grouped by IRP, in order of first appearance."""
    groups: dict[int, list[TraceRecord]] = {}
    for record in records:
        groups.setdefault(record.irp, []).append(record)
    lines = []
    for number, group in groups.items():
        lines.append(f"IRP #{number} {group[0].major}")
        lines.extend("  " + r.describe() for r in group)
    return "\n".join(lines)
