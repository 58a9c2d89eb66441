"""The IRP monitor: what each layer did with each IRP, and when, for traces, tests and ``airp demo``.

Tracing is off unless an :class:`IrpMonitor` is given to the :class:`~airp.IoManager` (or to an
:class:`~airp.IrpAllocator`); IRPs then carry a reference to it.  When it is off, ``call_driver``
and ``complete_request`` pay one ``is None`` test each and build nothing.

When it is on, each hook appends one plain tuple (event code, sequence number, IRP number, time,
device, location, status, information and one or two event-specific values) to a ring.  Nothing
else happens on the IRP's path: :class:`TraceRecord` objects, their notes and their text are built
only when someone reads them (:attr:`IrpMonitor.records`, :meth:`IrpMonitor.for_irp`,
:meth:`IrpMonitor.spans`, the exporters).  A logger or an ``include=`` predicate needs a record at
the moment of the event, so either one makes the monitor build records eagerly (and cost more).

The library never configures structlog: records go to the logger the application passes in (any
object with structlog's ``info(event, **fields)`` method), and to the bounded rings.
"""

from __future__ import annotations

import heapq
import itertools
import sys
import time
import weakref
from asyncio import _get_running_loop
from collections import deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from .._machine._arguments import check_plain_function
from .._machine._codes import IrpMajor
from .._machine._device import DeviceObject
from .._machine._irp import Irp
from .._machine._misuse import must_be
from .._machine._monitor import MonitorHookError, current_request, report_hook_error, set_aside
from .._machine._status import STATUS_MORE_PROCESSING_REQUIRED, STATUS_PENDING, NtStatus

__all__ = [
    "IrpMonitor",
    "LayerSpan",
    "LayerTiming",
    "QueueWait",
    "TraceLogger",
    "TraceRecord",
    "format_trace",
]


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
      ``status`` (``device`` is ``None`` for the IRP's creator: the requester, or for an IRP a
      driver allocated, that driver, named in ``creator``);
    - ``"done"``: the completion walk reached the top; ``status`` is the final status;
    - ``"queued"`` / ``"dequeued"``: the IRP entered / left the queue ``queue`` of ``device``
      (a StartIo lane, a device queue, a KMDF queue);
    - ``"cancel"``: ``cancel_irp`` was called for ``reason``; ``note`` names the cancel routine
      that ran, or says that none was set;
    - ``"free"`` / ``"reuse"``: the IRP was freed / reinitialised for a new request (a reused IRP
      gets a new number);
    - ``"link"``: a driver allocated this IRP while working on IRP ``parent``; ``device`` is the
      layer that allocated it;
    - ``"allocate"``: a driver allocated this IRP through an allocator with a monitor; ``creator``
      is the allocator's owner, when it has one.

    :ivar device: the device, by its label: its name (unnamed: its driver's name), unless another
        device the monitor saw already goes by that, in which case a label that tells them apart
        (``repr(device)`` when it says which stack the device is in, else ``"Widget #3"``).
    :ivar device_id: the device's number in this monitor (1, 2, ... in the order it first saw
        them): one number per device object, whatever its name.
    :ivar time: when it happened, on the run's clock (virtual time under :mod:`airp.testing`), in
        seconds.
    :ivar sequence: the order of the event among all events this monitor saw.
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
    time: float = 0.0
    sequence: int = 0
    creator: str | None = None
    parent: int | None = None
    queue: str | None = None
    reason: str | None = None
    device_id: int | None = None

    def describe(self) -> str:
        """One readable line about this record."""
        where = self.device or "the requester"
        status = self.status.name if self.status is not None else ""
        if self.device is not None and self.driver != self.device:
            where = f"{where} ({self.driver})"
        event = self.event
        if event == "dispatch":
            text = f"-> {where} gets {self.major} at location {self.location}"
        elif event == "return":
            text = f"<- {where} returns {status}"
        elif event == "complete":
            text = f"   {where} completes it: {status}, information={self.information}"
        elif event == "routine":
            if self.status == 0:
                status = "STATUS_CONTINUE_COMPLETION"
            if self.device is None and self.creator is not None:
                where = f"its creator, {self.creator}"
            text = f"   ^ completion routine of {where} ran, returned {status}"
        elif event == "done":
            text = f"== done: {status}, information={self.information}"
        elif event == "queued":
            text = f"   .. waits in {self.queue or 'the queue'} of {where}"
        elif event == "dequeued":
            text = f"   .. leaves {self.queue or 'the queue'} of {where} for its routine"
        elif event == "cancel":
            text = f"   x cancelled ({self.reason or 'cancel_irp'})"
        elif event == "free":
            text = "   freed"
        elif event == "reuse":
            text = "   reused for a new request"
        elif event == "link":
            text = f"   allocated by {where} for IRP #{self.parent}"
        else:
            text = f"   allocated by {self.creator or 'a driver'}"
        return f"{text} ({self.note})" if self.note else text


@dataclass(frozen=True, slots=True)
class LayerSpan:
    """How long one layer held one IRP: from the dispatch down to it, to its return and to the
    moment the completion walk passed it on the way up.

    :ivar irp: the IRP's trace number.
    :ivar device: the layer's device name; ``driver`` its driver's name.
    :ivar location: the stack location the layer's dispatch routine had (1 is the bottom).
    :ivar t_down: when ``call_driver`` handed the IRP to this layer.
    :ivar t_return: when its dispatch routine returned (``None``: not yet).
    :ivar t_complete: when the completion walk passed this layer (``None``: not yet, or the walk
        stopped below it at a STATUS_MORE_PROCESSING_REQUIRED routine that kept the IRP).
    :ivar status: what the dispatch routine returned (``None``: not yet).
    :ivar completion_status: the IRP's status when the walk passed this layer.
    :ivar pended: the dispatch routine returned STATUS_PENDING.
    """

    irp: int
    device: str
    driver: str
    major: str
    location: int
    t_down: float
    t_return: float | None
    t_complete: float | None
    status: NtStatus | None
    completion_status: NtStatus | None
    pended: bool

    @property
    def to_return(self) -> float | None:
        """Seconds from down to the dispatch routine's return, or ``None``."""
        return None if self.t_return is None else self.t_return - self.t_down

    @property
    def to_complete(self) -> float | None:
        """Seconds from down to the completion walk passing this layer, or ``None``."""
        return None if self.t_complete is None else self.t_complete - self.t_down

    @property
    def t_end(self) -> float | None:
        """When the layer was done with the IRP: the later of return and completion (``None``
        while either is missing)."""
        if self.t_return is None or self.t_complete is None:
            return None
        return max(self.t_return, self.t_complete)


@dataclass(frozen=True, slots=True)
class QueueWait:
    """The time an IRP waited in a queue of a device (a StartIo lane, a KMDF queue).

    :ivar t_dequeued: when it left the queue for the driver's routine; ``None`` if it has not (it
        is still waiting, or it was cancelled or flushed out of the queue).
    """

    irp: int
    device: str
    driver: str
    queue: str | None
    major: str
    t_queued: float
    t_dequeued: float | None

    @property
    def wait(self) -> float | None:
        """Seconds spent in the queue, or ``None`` if it has not left it."""
        return None if self.t_dequeued is None else self.t_dequeued - self.t_queued


@dataclass(frozen=True, slots=True)
class LayerTiming:
    """What one device did with the IRPs it held, summed up (:meth:`IrpMonitor.timings`).

    Means and maxima are over the spans that have the value (``None`` when none has).
    """

    device: str
    driver: str
    irps: int
    pended: int
    mean_to_return: float | None
    max_to_return: float | None
    mean_to_complete: float | None
    max_to_complete: float | None
    queued: int
    mean_queue_wait: float | None
    max_queue_wait: float | None


# -- events: the tuples the hooks append ---------------------------------------------------------------

# Each event is (code, sequence, irp number, time, device, index, status, information, a, b).
_DISPATCH, _RETURN, _COMPLETE, _ROUTINE, _DONE, _QUEUED, _DEQUEUED, _CANCEL, _FREE, _REUSE, _LINK, _ALLOCATE = range(12)
_EVENT_NAMES = (
    "dispatch",
    "return",
    "complete",
    "routine",
    "done",
    "queued",
    "dequeued",
    "cancel",
    "free",
    "reuse",
    "link",
    "allocate",
)
#: Where airp keeps what it knows about an IRP it allocated (airp._machine._allocation._KIND).
_KIND_KEY = "_airp_kind"

Event = tuple[int, int, int, float, "DeviceObject | None", int, int | None, int, object, object]


def _name(device: DeviceObject | None) -> str | None:
    if device is None:
        return None
    return device.name or device.driver.name


class _DeviceLabels:
    """What a monitor calls each device it has seen: a number, and a label unique among them.

    Devices are told apart by identity, never by name: two stacks of one driver have unnamed
    devices that share the driver's name, and merging them would merge their tracks.  A device's
    label is its name (or, unnamed, its driver's name) when no other device the monitor has seen
    holds that label; otherwise what ``repr(device)`` says of it, when that is specific (names
    the stack it is in), else the name followed by the device's number (``"Widget #3"``).  The
    first device keeps the plain name.  A label once given never changes (records already built
    or logged carry it); devices are held weakly, so a deleted device's label can be given again.
    """

    def __init__(self) -> None:
        self._of: weakref.WeakKeyDictionary[DeviceObject, tuple[int, str]] = weakref.WeakKeyDictionary()
        self._holders: dict[str, weakref.ref[DeviceObject]] = {}
        self._numbers = itertools.count(1)

    def _taken(self, label: str) -> bool:
        holder = self._holders.get(label)
        return holder is not None and holder() is not None

    def of(self, device: DeviceObject) -> tuple[int, str]:
        """*device*'s number and label, given now if it has none yet."""
        known = self._of.get(device)
        if known is not None:
            return known
        number = next(self._numbers)
        base = device.name or device.driver.name
        label = base
        if self._taken(label):
            text = repr(device)
            if text.startswith("<DeviceObject ") and text.endswith(">"):
                text = text[len("<DeviceObject ") : -1]
            generic = (base, f"{device.driver.name} device")
            label = text if text not in generic and not self._taken(text) else f"{base} #{number}"
        self._of[device] = (number, label)
        self._holders[label] = weakref.ref(device)
        return number, label

    def label(self, device: DeviceObject | None) -> str | None:
        return None if device is None else self.of(device)[1]

    def layer(self, device: DeviceObject | None) -> str | None:
        """A device as records name a layer: ``"label (Driver)"``, or the driver's name alone."""
        if device is None:
            return None
        label = self.of(device)[1]
        return label if label == device.driver.name else f"{label} ({device.driver.name})"


def _major_name(major: object) -> str:
    if not isinstance(major, int):
        return "?"
    try:
        return IrpMajor(major).name
    except ValueError:
        return hex(major)


def _routine_name(routine: object) -> str:
    return getattr(routine, "__name__", None) or repr(routine)


def _sequence_of(item: Event | TraceRecord) -> int:
    return item.sequence if isinstance(item, TraceRecord) else item[1]


class _RecordBuilder:
    """Turns events into records; it follows each IRP's open dispatches to number its returns."""

    def __init__(self, labels: _DeviceLabels, *, lasting: bool = False) -> None:
        self.labels = labels
        #: labels.of, remembered for the life of a builder that reads the rings once (a plain
        #: dict is cheaper than the weak one); a lasting builder (eager records) would keep every
        #: device it ever saw alive, so it asks the labels each time.
        self.seen: dict[DeviceObject, tuple[int, str]] | None = None if lasting else {}
        self.open: dict[int, list[tuple[int, str]]] = {}
        self.majors: dict[int, str] = {}
        self.creators: dict[int, str] = {}
        self.parents: dict[int, int] = {}

    def prime(self, events: Iterable[Event | TraceRecord]) -> None:
        """Learn each IRP's major function, creator and parent from all events before building,
        so that records before the first dispatch get them too."""
        for event in events:
            if isinstance(event, TraceRecord):
                continue
            code = event[0]
            number = event[2]
            if code == _DISPATCH:
                self.majors.setdefault(number, _major_name(event[8]))
            elif code == _LINK:
                self._learn_link(event)
            elif code in (_ALLOCATE, _REUSE) and event[8] is not None:
                self.creators.setdefault(number, str(event[8]))

    def _learn_link(self, event: Event) -> None:
        device = event[4]
        number = event[2]
        label = self.labels.layer(device)
        if label is not None:
            self.creators[number] = label
        self.parents[number] = int(event[8])  # type: ignore[call-overload]

    def forget(self, number: int) -> None:
        """Drop what is known of a finished IRP (the eager builder keeps no history)."""
        if number not in self.open:
            self.majors.pop(number, None)
            self.creators.pop(number, None)
            self.parents.pop(number, None)

    def build(self, event: Event) -> TraceRecord:
        code, sequence, number, when, device, index, status, information, a, b = event
        note = ""
        major = self.majors.get(number, "?")
        location = index + 1
        queue = None
        reason = None
        if code == _DISPATCH:
            major = _major_name(a)
            self.majors.setdefault(number, major)
            path = self.open.setdefault(number, [])
            notes = []
            skipped = bool(path) and path[-1][0] == index
            if skipped:
                notes.append("the layer above skipped its location")
            elif path:
                notes.append("passed down with its own location")
            if b is not None and not skipped:
                notes.append(f"completion routine {_routine_name(b)} armed above")
            path.append((index, major))
            note = "; ".join(notes)
        elif code == _RETURN:
            returning = self.open.get(number)
            if returning:
                returned_index, major = returning.pop()
                location = returned_index + 1
                if not returning:
                    del self.open[number]
            else:
                location = 0  # its dispatch record left the ring
            if status == STATUS_PENDING:
                note = "pended: the IRP is still in flight"
            elif a:
                note = "completed before returning"
            else:
                note = "held by a completion routine"
        elif code == _ROUTINE:
            note = _routine_name(a)
            if status == STATUS_MORE_PROCESSING_REQUIRED:
                note += ": the walk stops, the IRP is handed back"
        elif code == _DONE:
            note = "pending was returned" if a else "completed synchronously"
        elif code in (_QUEUED, _DEQUEUED):
            queue = None if a is None else str(a)
        elif code == _CANCEL:
            reason = None if b is None else str(b)
            note = "no cancel routine was set" if a is None else f"cancel routine {_routine_name(a)} ran"
        elif code == _LINK:
            self._learn_link(event)
            note = ""
        elif code in (_ALLOCATE, _REUSE):
            if a is not None:
                self.creators.setdefault(number, str(a))
            note = str(b) if b else ""
        if device is None:
            device_id: int | None = None
            label: str | None = None
        else:
            seen = self.seen
            if seen is None:
                device_id, label = self.labels.of(device)
            else:
                known = seen.get(device)
                if known is None:
                    known = seen[device] = self.labels.of(device)
                device_id, label = known
        return TraceRecord(
            irp=number,
            event=_EVENT_NAMES[code],
            location=location,
            device=label,
            driver=device.driver.name if device is not None else None,
            major=major,
            status=NtStatus(status) if status is not None else None,
            information=information,
            note=note,
            time=when,
            sequence=sequence,
            creator=self.creators.get(number),
            parent=self.parents.get(number),
            queue=queue,
            reason=reason,
            device_id=device_id,
        )


def _trio_time() -> float:
    import trio

    return trio.current_time()


def _run_clock() -> Callable[[], float]:
    """The running trio run's clock, or ``time.monotonic`` when no event loop runs."""
    trio = sys.modules.get("trio")
    if trio is not None and trio.lowlevel.in_trio_run():
        return _trio_time
    return time.monotonic


def _names(value: object, what: str) -> frozenset[str] | None:
    if value is None:
        return None
    items = (value,) if isinstance(value, (str, DeviceObject)) else value
    if not isinstance(items, Iterable):
        raise TypeError(f"{what} must be a name or a collection of names, got {value!r}")
    names = set()
    for item in items:
        if isinstance(item, DeviceObject):
            if what == "devices":
                continue  # kept by identity (_device_objects): its name may be shared
            item = _name(item)
        elif what == "drivers" and hasattr(item, "major_function") and hasattr(item, "name"):
            item = item.name
        if not isinstance(item, str):
            raise TypeError(f"{what} must hold names (str), got {item!r}")
        names.add(item)
    return frozenset(names)


def _majors(value: object) -> frozenset[int] | None:
    if value is None:
        return None
    items = (value,) if isinstance(value, (int, str)) else value
    if not isinstance(items, Iterable):
        raise TypeError(f"majors must be an IrpMajor or a collection of them, got {value!r}")
    majors = set()
    for item in items:
        if isinstance(item, str):
            try:
                item = IrpMajor[item.upper().removeprefix("IRP_MJ_")]
            except KeyError:
                raise ValueError(f"majors: no major function named {item!r} (expected an IrpMajor name such as 'READ')") from None
        if type(item) is bool or not isinstance(item, int):
            raise TypeError(f"majors must hold IrpMajor values or names, got {item!r}")
        majors.add(int(item))
    return frozenset(majors)


def _statuses(value: object) -> frozenset[int] | None:
    if value is None:
        return None
    items = (value,) if isinstance(value, int) else value
    if not isinstance(items, Iterable):
        raise TypeError(f"statuses must be an NtStatus or a collection of them, got {value!r}")
    statuses = set()
    for item in items:
        if type(item) is bool or not isinstance(item, int):
            raise TypeError(f"statuses must hold NtStatus values, got {item!r}")
        statuses.add(int(NtStatus(item)))
    return frozenset(statuses)


def _check_records(records: object, what: str = "records") -> Iterable[TraceRecord]:
    """*records* if it is an iterable; each item is checked as it is read."""
    if not isinstance(records, Iterable) or isinstance(records, (str, bytes)):
        raise must_be(what, "an iterable of TraceRecord (IrpMonitor.records, say)", records)
    return (_check_record(record, what) for record in records)


def _check_record(record: object, what: str) -> TraceRecord:
    if not isinstance(record, TraceRecord):
        raise must_be(f"each of {what}", "a TraceRecord", record)
    return record


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


class IrpMonitor:
    """Records what happens to IRPs, layer by layer, with the time of the run's clock.

    Give it to :class:`~airp.IoManager` (``IoManager(monitor=IrpMonitor())``): every IRP built
    there reports to it, and so does every IRP a driver allocates while it works on one of them
    (it is linked to that request).  An IRP a driver allocates elsewhere (a timer, a worker task)
    is watched when its :class:`~airp.IrpAllocator` was given ``monitor=``.

    :param logger: where to send each record as it happens (``logger.info("irp.dispatch",
        irp=..., device=..., ...)``); ``None`` keeps them only in the rings.  A logger makes the
        monitor build each record eagerly.
    :param capacity: how many recent events to keep, in one ring for all devices.
    :param per_device: keep a ring of this many events per device instead (events that belong to
        no device, such as ``done`` and ``free``, share one more ring of that size).
    :param include: a predicate on records; those it rejects are neither kept nor logged.  It makes
        the monitor build each record eagerly: prefer the filters below, which cost almost nothing.
    :param devices: keep only events at these devices (names, or device objects: a device object
        stands for itself, a name for every device of that name); an IRP's device-less events
        (``done``, ``free`` ...) are kept when it has an event at one of them.
    :param drivers: keep only events at devices of these drivers (names, or drivers).
    :param majors: keep only IRPs of these major functions (:class:`~airp.IrpMajor` values or names).
    :param statuses: when reading, keep only IRPs whose final status is one of these (the status
        at the end of the walk, or at its last completion for an IRP handed back to its creator);
        IRPs still in flight are left out.
    :param clock: a function returning the time in seconds; by default the running event loop's
        (``anyio.current_time()``, so virtual time under :mod:`airp.testing`), or
        ``time.monotonic`` when no event loop runs (sans-I/O use).
    :raises ValueError: if *capacity* or *per_device* is not positive, or a major name is unknown.
    :raises TypeError: if a filter holds something other than names, majors or statuses, *logger*
        has no ``info`` method, or *include* or *clock* is not a plain function (both are called
        inside ``call_driver`` and the completion walk, where nothing can be awaited).
    """

    def __init__(
        self,
        logger: TraceLogger | None = None,
        *,
        capacity: int = 10_000,
        per_device: int | None = None,
        include: Callable[[TraceRecord], bool] | None = None,
        devices: Collection[str | DeviceObject] | str | DeviceObject | None = None,
        drivers: Collection[object] | str | None = None,
        majors: Collection[IrpMajor | int | str] | IrpMajor | int | str | None = None,
        statuses: Collection[int] | int | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        for what, value in (("capacity", capacity), ("per_device", per_device)):
            if (value is not None or what == "capacity") and (type(value) is not int or value <= 0):
                raise ValueError(f"{what} must be positive (an int of at least 1), got {type(value).__name__} {value!r}")
        if logger is not None and not callable(getattr(logger, "info", None)):
            raise must_be("logger", "a logger with an info(event, **fields) method (structlog's) or None", logger)
        check_plain_function("include", include, signature="(record) -> bool", why="it runs inside the IRP's hooks")
        check_plain_function("clock", clock, signature="() -> seconds", why="it is read inside the IRP's hooks")
        self.logger = logger
        self.include = include
        self.capacity = capacity
        self.per_device = per_device
        self.devices = _names(devices, "devices")
        #: Devices given as objects: kept by identity (another device may have the same name).
        self._device_objects: frozenset[DeviceObject] = frozenset(
            item
            for item in ((devices,) if isinstance(devices, DeviceObject) else (() if devices is None or isinstance(devices, str) else devices))
            if isinstance(item, DeviceObject)
        )
        self.drivers = _names(drivers, "drivers")
        self.majors = _majors(majors)
        self.statuses = _statuses(statuses)
        self._clock = clock
        self._now: Callable[[], float] = clock if clock is not None else time.monotonic
        self._loop: object = None
        self._ids = itertools.count(1)
        self._seq = itertools.count()
        #: The one ring (``None`` with *per_device*: then :attr:`_rings`).
        self._ring: deque[Event | TraceRecord] | None = None if per_device else deque(maxlen=capacity)
        self._rings: dict[DeviceObject | None, deque[Event | TraceRecord]] = {}
        self._device_filter: dict[DeviceObject, bool] | None = {} if (self.devices is not None or self.drivers is not None) else None
        self._eager = logger is not None or include is not None
        self._labels = _DeviceLabels()
        self._builder = _RecordBuilder(self._labels, lasting=True)
        self._errors: list[MonitorHookError] = []
        self._errors_dropped = 0

    # -- reading ------------------------------------------------------------------------------------

    def _events(self) -> list[Event | TraceRecord]:
        if self._ring is not None:
            return list(self._ring)
        return list(heapq.merge(*self._rings.values(), key=_sequence_of))

    def _build(self) -> list[TraceRecord]:
        events = self._events()
        builder = _RecordBuilder(self._labels)
        builder.prime(events)
        records = [event if isinstance(event, TraceRecord) else builder.build(event) for event in events]
        if self._device_filter is not None:
            # Device-less records belong to IRPs that were seen at a kept device.
            seen = {r.irp for r in records if r.device is not None}
            records = [r for r in records if r.device is not None or r.irp in seen]
        if self.majors is not None:
            names = {_major_name(m) for m in self.majors}
            records = [r for r in records if r.major in names]
        if self.statuses is not None:
            final: dict[int, int] = {}
            done: set[int] = set()
            for r in records:
                if r.status is None:
                    continue
                if r.event == "done":
                    final[r.irp] = r.status
                    done.add(r.irp)
                elif r.event == "complete" and r.irp not in done:
                    final[r.irp] = r.status
            records = [r for r in records if final.get(r.irp) in self.statuses]
        return records

    @property
    def records(self) -> list[TraceRecord]:
        """The kept records, oldest first (built now from the kept events)."""
        return self._build()

    def for_irp(self, irp: Irp | int) -> list[TraceRecord]:
        """The kept records of one IRP (by object or trace number).

        :raises TypeError: if *irp* is neither an Irp nor an int.
        """
        if isinstance(irp, int) and not isinstance(irp, bool):
            number = irp
        elif isinstance(irp, Irp):
            number = irp._trace_id
        else:
            raise must_be("for_irp(irp): irp", "an Irp or its trace number (int)", irp)
        return [r for r in self._build() if r.irp == number]

    def clear(self) -> None:
        """Forget the kept records."""
        if self._ring is not None:
            self._ring.clear()
        self._rings.clear()
        self._builder = _RecordBuilder(self._labels, lasting=True)

    def spans(self, records: Iterable[TraceRecord] | None = None) -> list[LayerSpan]:
        """Per IRP and per layer, when the IRP went down, came back and was completed there.

        :param records: the records to compute them from (default: :attr:`records`).
        :returns: one span per dispatch, in the order the IRPs went down.
        :raises TypeError: if *records* is not an iterable (of TraceRecord).
        """
        return _spans(self.records if records is None else _check_records(records))

    def queue_waits(self, records: Iterable[TraceRecord] | None = None) -> list[QueueWait]:
        """The waits of IRPs in queues (StartIo lanes, device queues, KMDF queues).

        :param records: the records to compute them from (default: :attr:`records`).
        :returns: one wait per time an IRP entered a queue, in order.
        :raises TypeError: if *records* is not an iterable (of TraceRecord).
        """
        return _queue_waits(self.records if records is None else _check_records(records))

    def timings(self) -> dict[str, LayerTiming]:
        """A summary per device: IRPs held, how many pended, time to return and to completion,
        and queue waits (from :meth:`spans` and :meth:`queue_waits`).

        :returns: the summaries by device label (:attr:`TraceRecord.device`: the name, unless two
            devices share it), in the order the devices were first seen.
        """
        records = self.records
        by_device: dict[str, list[LayerSpan]] = {}
        drivers: dict[str, str] = {}
        for span in _spans(records):
            by_device.setdefault(span.device, []).append(span)
            drivers[span.device] = span.driver
        waits: dict[str, list[QueueWait]] = {}
        for wait in _queue_waits(records):
            waits.setdefault(wait.device, []).append(wait)
            drivers.setdefault(wait.device, wait.driver)
            by_device.setdefault(wait.device, [])
        summary = {}
        for device, spans in by_device.items():
            returns = [s.to_return for s in spans if s.to_return is not None]
            completes = [s.to_complete for s in spans if s.to_complete is not None]
            queued = [w.wait for w in waits.get(device, []) if w.wait is not None]
            summary[device] = LayerTiming(
                device=device,
                driver=drivers[device],
                irps=len(spans),
                pended=sum(s.pended for s in spans),
                mean_to_return=_mean(returns),
                max_to_return=max(returns, default=None),
                mean_to_complete=_mean(completes),
                max_to_complete=max(completes, default=None),
                queued=len(waits.get(device, [])),
                mean_queue_wait=_mean(queued),
                max_queue_wait=max(queued, default=None),
            )
        return summary

    # -- keeping an event ---------------------------------------------------------------------------

    def _ring_of(self, device: DeviceObject | None) -> deque[Event | TraceRecord]:
        ring = self._rings.get(device)
        if ring is None:
            ring = self._rings[device] = deque(maxlen=self.per_device)
        return ring

    def _kept_device(self, device: DeviceObject) -> bool:
        assert self._device_filter is not None
        kept = self._device_filter.get(device)
        if kept is None:
            kept = self._device_filter[device] = (
                self.devices is None or _name(device) in self.devices or device in self._device_objects
            ) and (self.drivers is None or device.driver.name in self.drivers)
        return kept

    def _keep_eagerly(self, ring: deque[Event | TraceRecord]) -> None:
        # The event just appended becomes a record now, for the include predicate and the logger.
        event = ring.pop()
        assert not isinstance(event, TraceRecord)
        record = self._builder.build(event)
        if record.event == "done" or record.event == "free":
            self._builder.forget(record.irp)
        if self.include is not None and not self.include(record):
            return
        ring.append(record)
        if self.logger is not None:
            fields = asdict(record)
            del fields["event"]  # already in the event name; a second "event" argument is a TypeError
            fields["status"] = record.status.name if record.status is not None else None
            self.logger.info(f"irp.{record.event}", **fields)

    # -- when a hook fails ----------------------------------------------------------------------------

    #: How many hook failures :attr:`errors` keeps (later ones are only counted).
    MAX_ERRORS = 100

    @property
    def errors(self) -> list[MonitorHookError]:
        """The failures of this monitor's hooks, oldest first (at most :attr:`MAX_ERRORS`).

        A hook fails when the ``logger``, the ``include`` predicate or the ``clock`` it was given
        raises (or, should it happen, the monitor's own code).  The IRP is never the worse for
        it: the monitor stops watching that IRP (its other watchers, a verifier, go on), keeps
        the failure here with the original exception as ``__cause__``, and reports the first one
        through :func:`sys.unraisablehook` (a ``PytestUnraisableExceptionWarning`` under pytest,
        a traceback on stderr otherwise).  A failure in :meth:`watch` only loses that event.
        """
        return list(self._errors)

    def _hook_failed(self, hook: str, irp: Irp, error: Exception) -> None:
        # Never raises: the IRP's own path (call_driver, the completion walk) is below us.
        try:
            if hook == "watch":
                consequence = "that event was not recorded; the IRP went on"
            elif set_aside(irp, self):
                consequence = "the monitor stopped watching that IRP, which went on"
            else:
                return  # already set aside for this IRP: one report per IRP
            failure = MonitorHookError(self, hook, irp, error, consequence)
            if len(self._errors) >= self.MAX_ERRORS:
                self._errors_dropped += 1
                return
            self._errors.append(failure)
            if len(self._errors) == 1:
                report_hook_error(failure)
        except Exception:
            pass

    # -- hooks called by the machine, the shell and the I/O manager -----------------------------------

    def watch(self, irp: Irp) -> Irp:
        """Make *irp* report to this monitor (the I/O manager does this for the IRPs it builds).

        It also picks up the running event loop's clock, once per loop.
        """
        try:
            irp._monitor = self
            if not irp._trace_id:
                irp._trace_id = next(self._ids)
            if self._clock is None:
                loop = _get_running_loop()
                if loop is None:
                    self._now = _run_clock()
                elif loop is not self._loop:
                    self._loop = loop
                    self._now = loop.time
            kind = irp.__dict__.get(_KIND_KEY)
            if kind is not None:
                # A driver's own IRP (allocate_irp, a build helper, a pool): remember who made it.
                owner = getattr(kind.allocator, "owner", None)
                ring = self._ring if self._ring is not None else self._ring_of(None)
                ring.append((_ALLOCATE, next(self._seq), irp._trace_id, self._now(), None, irp._index, None, 0, getattr(owner, "name", None), None))
                if self._eager:
                    self._keep_eagerly(ring)
            return irp
        except Exception as error:
            self._hook_failed("watch", irp, error)
            return irp

    def linked(self, child: Irp, parent: Irp) -> None:
        try:
            index = parent._index
            device = parent._stack[index].device if index < parent.stack_count else None
            if device is not None and self._device_filter is not None and not self._kept_device(device):
                return
            ring = self._ring if self._ring is not None else self._ring_of(device)
            ring.append((_LINK, next(self._seq), child._trace_id, self._now(), device, child._index, None, 0, parent._trace_id, None))
            if self._eager:
                self._keep_eagerly(ring)
        except Exception as error:
            self._hook_failed("linked", child, error)

    def dispatching(self, irp: Irp, device: DeviceObject) -> None:
        try:
            if self._device_filter is not None and not self._kept_device(device):
                return
            index = irp._index
            loc = irp._stack[index]
            major = loc.major
            if self.majors is not None and major not in self.majors:
                return
            ring = self._ring
            if ring is None:
                ring = self._ring_of(device)
            ring.append((_DISPATCH, next(self._seq), irp._trace_id, self._now(), device, index, None, 0, major, loc.completion_routine))
            if self._eager:
                self._keep_eagerly(ring)
        except Exception as error:
            self._hook_failed("dispatching", irp, error)

    def dispatched(self, irp: Irp, device: DeviceObject, status: NtStatus) -> NtStatus:
        try:
            if self._device_filter is not None and not self._kept_device(device):
                return status
            ring = self._ring
            if ring is None:
                ring = self._ring_of(device)
            ring.append((_RETURN, next(self._seq), irp._trace_id, self._now(), device, -1, status, irp.information, irp._index > irp.stack_count, None))
            if self._eager:
                self._keep_eagerly(ring)
            return status
        except Exception as error:
            self._hook_failed("dispatched", irp, error)
            return status

    def queued(self, irp: Irp, device: DeviceObject, queue: str | None) -> None:
        try:
            if self._device_filter is not None and not self._kept_device(device):
                return
            ring = self._ring if self._ring is not None else self._ring_of(device)
            ring.append((_QUEUED, next(self._seq), irp._trace_id, self._now(), device, irp._index, None, 0, queue, None))
            if self._eager:
                self._keep_eagerly(ring)
        except Exception as error:
            self._hook_failed("queued", irp, error)

    def dequeued(self, irp: Irp, device: DeviceObject, queue: str | None) -> None:
        try:
            if self._device_filter is not None and not self._kept_device(device):
                return
            ring = self._ring if self._ring is not None else self._ring_of(device)
            ring.append((_DEQUEUED, next(self._seq), irp._trace_id, self._now(), device, irp._index, None, 0, queue, None))
            if self._eager:
                self._keep_eagerly(ring)
        except Exception as error:
            self._hook_failed("dequeued", irp, error)

    def completing(self, irp: Irp) -> None:
        try:
            index = irp._index
            device = irp._stack[index].device if index < irp.stack_count else None
            if device is not None and self._device_filter is not None and not self._kept_device(device):
                return
            ring = self._ring
            if ring is None:
                ring = self._ring_of(device)
            ring.append((_COMPLETE, next(self._seq), irp._trace_id, self._now(), device, index, irp.status, irp.information, None, None))
            if self._eager:
                self._keep_eagerly(ring)
        except Exception as error:
            self._hook_failed("completing", irp, error)

    def routine_ran(self, irp: Irp, owner: DeviceObject | None, routine: object, result: int) -> None:
        try:
            if owner is not None and self._device_filter is not None and not self._kept_device(owner):
                return
            ring = self._ring
            if ring is None:
                ring = self._ring_of(owner)
            ring.append((_ROUTINE, next(self._seq), irp._trace_id, self._now(), owner, irp._index, result, irp.information, routine, None))
            if self._eager:
                self._keep_eagerly(ring)
        except Exception as error:
            self._hook_failed("routine_ran", irp, error)

    def completed(self, irp: Irp) -> None:
        try:
            # The dispatch routines of a synchronously completed IRP have not returned yet: their
            # locations stay open (in the record builder) until their "return" events.
            ring = self._ring
            if ring is None:
                ring = self._ring_of(None)
            ring.append((_DONE, next(self._seq), irp._trace_id, self._now(), None, irp.stack_count, irp.status, irp.information, irp.pending_returned, None))
            if self._eager:
                self._keep_eagerly(ring)
        except Exception as error:
            self._hook_failed("completed", irp, error)

    def cancelled(self, irp: Irp, routine: object, reason: str | None) -> None:
        try:
            index = irp._index
            device = irp._stack[index].device if index < irp.stack_count else None
            if device is not None and self._device_filter is not None and not self._kept_device(device):
                return
            ring = self._ring if self._ring is not None else self._ring_of(device)
            ring.append((_CANCEL, next(self._seq), irp._trace_id, self._now(), device, index, None, irp.information, routine, reason))
            if self._eager:
                self._keep_eagerly(ring)
        except Exception as error:
            self._hook_failed("cancelled", irp, error)

    def freed(self, irp: Irp) -> None:
        try:
            ring = self._ring if self._ring is not None else self._ring_of(None)
            ring.append((_FREE, next(self._seq), irp._trace_id, self._now(), None, irp._index, None, irp.information, None, None))
            if self._eager:
                self._keep_eagerly(ring)
        except Exception as error:
            self._hook_failed("freed", irp, error)

    def reused(self, irp: Irp) -> None:
        try:
            ring = self._ring if self._ring is not None else self._ring_of(None)
            creator: object = None
            if ring:
                # watch() has just recorded the reinitialised IRP as newly allocated: it is a reuse.
                last = ring[-1]
                if isinstance(last, TraceRecord):
                    if last.irp == irp._trace_id and last.event == "allocate":
                        ring.pop()
                        creator = last.creator
                elif last[2] == irp._trace_id and last[0] == _ALLOCATE:
                    ring.pop()
                    creator = last[8]
            if creator is None:
                # Reused by a driver while it works on a request: that layer made it.
                parent = current_request.get()
                if parent is not None and parent._index < parent.stack_count:
                    creator = self._labels.layer(parent._stack[parent._index].device)
            ring.append((_REUSE, next(self._seq), irp._trace_id, self._now(), None, irp._index, None, 0, creator, None))
            if self._eager:
                self._keep_eagerly(ring)
        except Exception as error:
            self._hook_failed("reused", irp, error)

    def __repr__(self) -> str:
        kept = len(self._ring) if self._ring is not None else sum(len(r) for r in self._rings.values())
        failed = len(self._errors) + self._errors_dropped
        return f"<IrpMonitor {kept} events kept, {failed} hook failure(s)>" if failed else f"<IrpMonitor {kept} events kept>"


# -- summaries ---------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _OpenSpan:
    irp: int
    device: str
    driver: str
    major: str
    location: int
    t_down: float
    t_return: float | None = None
    t_complete: float | None = None
    status: NtStatus | None = None
    completion_status: NtStatus | None = None
    walk: int = -1  # the sequence of the completion walk that passed it, until the walk stops below
    open: bool = field(default=True)

    def freeze(self) -> LayerSpan:
        return LayerSpan(
            self.irp,
            self.device,
            self.driver,
            self.major,
            self.location,
            self.t_down,
            self.t_return,
            self.t_complete,
            self.status,
            self.completion_status,
            self.status == STATUS_PENDING,
        )


def _spans(records: Iterable[TraceRecord]) -> list[LayerSpan]:
    spans: list[_OpenSpan] = []
    by_irp: dict[int, list[_OpenSpan]] = {}
    for r in records:
        if r.event == "dispatch":
            assert r.device is not None
            assert r.driver is not None
            span = _OpenSpan(r.irp, r.device, r.driver, r.major, r.location, r.time)
            spans.append(span)
            by_irp.setdefault(r.irp, []).append(span)
        elif r.event == "return":
            for span in reversed(by_irp.get(r.irp, ())):
                if span.open and span.device == r.device:
                    span.open = False
                    span.t_return = r.time
                    span.status = r.status
                    break
        elif r.event == "complete":
            # The walk starts at this location and passes every layer at or above it (a skipped
            # location is shared by two layers) until a routine keeps the IRP.
            for span in by_irp.get(r.irp, ()):
                if span.t_complete is None and span.location >= r.location:
                    span.t_complete = r.time
                    span.completion_status = r.status
                    span.walk = r.sequence
        elif r.event == "routine" and r.status == STATUS_MORE_PROCESSING_REQUIRED:
            # The walk stopped at the owner of that routine: it and the layers above it still hold it.
            for span in by_irp.get(r.irp, ()):
                if span.t_complete is not None and span.walk >= 0 and span.location >= r.location:
                    span.t_complete = None
                    span.completion_status = None
                    span.walk = -1
        elif r.event == "done":
            for span in by_irp.get(r.irp, ()):
                span.walk = -1  # final
    return [span.freeze() for span in spans]


def _queue_waits(records: Iterable[TraceRecord]) -> list[QueueWait]:
    waits: list[list[Any]] = []
    open_waits: dict[tuple[int, str | None, str | None], list[Any]] = {}
    for r in records:
        if r.event == "queued":
            entry = [r.irp, r.device, r.driver, r.queue, r.major, r.time, None]
            waits.append(entry)
            open_waits[(r.irp, r.device, r.queue)] = entry
        elif r.event == "dequeued":
            found = open_waits.pop((r.irp, r.device, r.queue), None)
            if found is not None:
                found[6] = r.time
    return [QueueWait(*entry) for entry in waits]


def format_trace(records: Iterable[TraceRecord], *, times: bool = False) -> str:
    """Render records as indented lines grouped by IRP, in order of first appearance.

    :param records: the records, e.g. :attr:`IrpMonitor.records` or :meth:`IrpMonitor.for_irp`.
    :param times: start each line with the record's time, in seconds since the IRP's first record.
    :returns: the text, one line per record under a heading line per IRP.
    :raises TypeError: if *records* is not an iterable of TraceRecord.
    """
    groups: dict[int, list[TraceRecord]] = {}
    for record in _check_records(records, "format_trace(records)"):
        groups.setdefault(record.irp, []).append(record)
    lines = []
    for number, group in groups.items():
        lines.append(f"IRP #{number} {group[0].major}")
        start = group[0].time
        for r in group:
            prefix = f"  +{r.time - start:.6f}s" if times else ""
            lines.append(prefix + "  " + r.describe())
    return "\n".join(lines)
