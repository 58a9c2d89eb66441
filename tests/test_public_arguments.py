"""A bad argument to the public API is refused where it is given, clearly.

A property over the public callables.  Every function that ``airp`` exports, the constructor of
every class a user builds, and the public methods a user calls on them are called with one
ill-typed argument at a time, the others valid.  The ill-typed values come from each parameter's
type hints (``typing.get_type_hints``): ``None`` where ``None`` is not allowed, a str where a
device, an IRP, a number or a callable is expected, an IRP where a device is expected and the other
way round, a coroutine function where a plain function is expected (and a plain function where an
``async def`` is), a float where an int is expected, NaN or a negative number where seconds or a
count are expected, an int where bytes are expected.  The property: the call raises
:class:`TypeError` or :class:`ValueError` (or :class:`~airp.BugCheck` / :class:`~airp.NtStatusError`
where the IRP rules say so), and the message names the parameter (or what it is) and what it got;
never an ``AttributeError`` / ``KeyError`` / ``IndexError`` / ``AssertionError`` from deep inside,
and never accepted (to fail later, at the first open or the first routine failure).

The enumeration is exhaustive over those values, so it is deterministic: each target gets a fresh
small world (an I/O manager, a filter over a disk, an IRP), valid arguments from factories keyed by
parameter name and type, and is called first with all of them (which must work: it shows the
world is right), then once per bad value.  Async callables are awaited, on both backends, on the
virtual clock.  Parameters whose annotation is deliberately loose (``tag: object``, a context) are
not probed; :data:`LOOSE` lists them, with why.  A public callable that is neither probed nor
listed in :data:`NOT_PROBED` fails :func:`test_every_public_callable_is_probed_or_listed`, so a new
one is probed from the day it is added.
"""

from __future__ import annotations

import collections.abc
import contextlib
import dataclasses
import enum
import gc
import inspect
import math
import os
import pathlib
import sys
import types
import typing
import warnings
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest

import airp
from airp import (
    STATUS_SUCCESS,
    DeviceObject,
    Driver,
    IoManager,
    Irp,
    IrpMajor,
    complete_request,
)

pytestmark = pytest.mark.anyio


# -- the drivers of the world ----------------------------------------------------------------------


class Disk(Driver):
    """Completes everything at once, with STATUS_SUCCESS; its StartIo routine too."""

    @airp.dispatch(*IrpMajor)
    async def everything(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    async def start_io(self, device: DeviceObject, irp: Irp) -> None:
        complete_request(irp, STATUS_SUCCESS, 0)


class PnpFunction(Disk):
    """A function driver for a PnP stack: its device answers PnP requests with STATUS_SUCCESS."""

    def add_device(self, pdo: DeviceObject) -> None:
        device = DeviceObject(self)
        airp.attach_device(device, pdo)
        device.flags &= ~airp.DeviceFlags.DEVICE_INITIALIZING

    @airp.dispatch(IrpMajor.PNP)
    async def pnp(self, device: DeviceObject, irp: Irp) -> int:
        minor = irp.current_stack_location.minor
        if minor == airp.PnpMinor.REMOVE_DEVICE:
            lower = device.lower_device
            assert lower is not None
            irp.skip_current_stack_location()
            status = await airp.call_driver(lower, irp)
            airp.detach_device(lower)
            airp.delete_device(device)
            return status
        return await airp.pass_down(device, irp)


class Filter(Driver):
    """Passes everything down."""

    pass_through = True


async def start_io(device: DeviceObject, irp: Irp) -> None:
    complete_request(irp, STATUS_SUCCESS, 0)


async def queue_handler(queue: airp.IoQueue, request: airp.Request) -> None:
    request.complete(STATUS_SUCCESS, 0)


def plain(*args: Any) -> int:
    return STATUS_SUCCESS


def plain_cancel(device: DeviceObject | None, irp: Irp) -> None:
    complete_request(irp, airp.STATUS_CANCELLED, 0)


async def coroutine_function(*args: Any) -> int:
    return STATUS_SUCCESS


# -- the world: fresh for every call ----------------------------------------------------------------


SIMULATION = """
[[stack]]
driver = "sim-disk"

[workload]
rate = 1.0
requests = 10
"""


class World:
    """An I/O manager with a filter (``device``) over a disk (``lower``), and what a call needs."""

    counter = 0
    directory: pathlib.Path

    def __init__(self) -> None:
        World.counter += 1
        self.n = World.counter
        self.io = IoManager()
        self.disk_driver = Disk()
        self.filter_driver = Filter()
        self.lower = self.io.create_device(self.disk_driver, f"\\Device\\Disk{self.n}")
        self.device = self.io.create_device(self.filter_driver, f"\\Device\\Top{self.n}")
        airp.attach_device(self.device, self.lower)
        self.handles: list[airp.FileHandle] = []
        self.stack = contextlib.AsyncExitStack()
        self._entered = False
        self._pool: tuple[airp.IrpPool, Irp] | None = None
        self._csq: tuple[airp.IrpQueue, airp.CsqIrpContext] | None = None

    async def enter(self) -> None:
        """Be inside ``async with io:`` (what the PnP calls need)."""
        if not self._entered:
            self._entered = True
            await self.stack.enter_async_context(self.io)

    async def run(self, device: DeviceObject) -> None:
        """Run *device*'s task group until the world closes."""
        if airp.device_tasks(device).state is airp.DeviceState.CREATED:
            await self.stack.enter_async_context(airp.run_device(device))

    def lower_irp(self) -> Irp:
        """An IRP as the dispatch routine of ``lower`` holds it: at its current location."""
        irp = Irp(self.lower.stack_size)
        irp.next_stack_location.major = IrpMajor.READ
        irp.set_next_stack_location()
        irp.current_stack_location.device = self.lower
        return irp

    def cancelable_irp(self) -> Irp:
        irp = self.current_irp()
        irp.mark_pending()
        airp.mark_irp_cancelable(irp, plain_cancel)
        return irp

    def pool_irp(self, routine: bool = False) -> tuple[airp.IrpPool, Irp]:
        """A pool over ``device`` and an IRP from it (with the routine that gives it back)."""
        if self._pool is None:
            pool = airp.IrpPool(self.device)
            irp = pool.get()
            assert irp is not None
            self._pool = (pool, irp)
        pool, irp = self._pool
        if routine:
            irp.next_stack_location.major = IrpMajor.READ

            def back(device: DeviceObject | None, irp: Irp, context: object) -> int:
                pool.put(irp)
                return airp.STATUS_MORE_PROCESSING_REQUIRED

            irp.set_completion_routine(back)
        return self._pool

    def csq_context(self) -> tuple[airp.IrpQueue, airp.CsqIrpContext]:
        if self._csq is None:
            queue = airp.IrpQueue()
            context = airp.CsqIrpContext()
            queue.insert(self.current_irp(), context)
            self._csq = (queue, context)
        return self._csq

    def busy_device_queue(self) -> airp.DeviceQueue[Irp]:
        queue: airp.DeviceQueue[Irp] = airp.DeviceQueue()
        queue.insert(self.irp())  # the first insert makes it busy
        return queue

    def path(self, name: str) -> pathlib.Path:
        return World.directory / f"{self.n}-{name}"

    def simulation_file(self) -> pathlib.Path:
        path = self.path("simulation.toml")
        path.write_text(SIMULATION)
        return path

    def irp(self, major: IrpMajor = IrpMajor.READ) -> Irp:
        """A requester's IRP for ``device``: its next (first) location filled."""
        irp = Irp(self.device.stack_size + 1)
        irp.next_stack_location.major = major
        return irp

    def current_irp(self) -> Irp:
        """An IRP as a dispatch routine of ``device`` holds it: at a current location, with one below."""
        irp = self.irp()
        irp.set_next_stack_location()
        return irp

    def completed_irp(self) -> Irp:
        irp = self.irp()
        complete_request(irp, STATUS_SUCCESS, 0)
        return irp

    async def handle(self) -> airp.FileHandle:
        handle = await self.io.open(f"\\Device\\Top{self.n}")
        self.handles.append(handle)
        return handle

    async def close(self) -> None:
        for handle in self.handles:
            with contextlib.suppress(Exception):
                await handle.close()
        with contextlib.suppress(Exception):
            await self.stack.aclose()


# -- what a call is made of -------------------------------------------------------------------------

Factory = Callable[[World], object]


@dataclass(frozen=True)
class Target:
    """One public callable: how to get it from a world, and valid values for its parameters."""

    name: str
    get: Callable[[World], Any]
    #: The function whose signature and hints describe the call (a bound method's function).
    spec: Callable[..., Any]
    valid: dict[str, Factory] = field(default_factory=dict)
    #: An async factory for the callable, for targets whose object needs an await to exist.
    aget: Callable[[World], Awaitable[Any]] | None = None


def _hints(func: Callable[..., Any]) -> dict[str, Any]:
    module = sys.modules.get(getattr(func, "__module__", ""), None)
    globalns = dict(vars(module)) if module is not None else {}
    localns = {name: getattr(airp, name) for name in dir(airp) if not name.startswith("__")}
    from airp._machine._monitor import MonitorHooks
    from airp._shell._device_tasks import _HasIrp

    localns.update(MonitorHooks=MonitorHooks, _HasIrp=_HasIrp)
    return typing.get_type_hints(func, globalns=globalns, localns=localns)


# -- valid values ---------------------------------------------------------------------------------


#: Valid values by parameter name, for any target (a target's own ``valid`` wins).
BY_NAME: dict[str, Factory] = {
    "stack_size": lambda w: w.device.stack_size + 1,
    "status": lambda w: STATUS_SUCCESS,
    "information": lambda w: 0,
    "code": lambda w: airp.ControlCode.make(0x22, 0x800),
    "key": lambda w: 0,
    "count": lambda w: 2,
    "length": lambda w: 4,
    "offset": lambda w: 0,
    "output_length": lambda w: 0,
    "minor": lambda w: 0,
    "major": lambda w: IrpMajor.READ,
    "device_type": lambda w: 0x22,
    "flags": lambda w: 0,
    "seed": lambda w: 0,
    "timeout": lambda w: 5.0,
    "seconds": lambda w: 1.0,
    "grace": lambda w: 1.0,
    "cancel_wait_limit": lambda w: 10.0,
    "limit": lambda w: None,
    "high_water_mark": lambda w: 8,
    "capacity": lambda w: 100,
    "per_device": lambda w: 10,
    "max_idle": lambda w: 4,
    "small_depth": lambda w: 4,
    "large_depth": lambda w: 4,
    "fraction": lambda w: 0.5,
    "force_pending": lambda w: 0.5,
    "width": lambda w: 8.0,
    "number": lambda w: 1,
    "hardware_id": lambda w: f"ROOT\\VALIDATE{w.n}",
    "name": lambda w: f"validate-{w.n}",
    "input": lambda w: b"in",
    "data": lambda w: b"data",
    "removal_status": lambda w: airp.STATUS_NO_SUCH_DEVICE,
    "irp": lambda w: w.irp(),
    "master": lambda w: w.current_irp(),
    "device": lambda w: w.device,
    "target": lambda w: w.lower,
    "source": lambda w: w.io.create_device(Filter()),
    "lower": lambda w: w.lower,
    "driver": lambda w: w.disk_driver,
    "routine": lambda w: plain,
    "reason": lambda w: "why",
    "state": lambda w: airp.PnpState.STARTED,
    "records": lambda w: [],
}


def _valid_by_type(hint: Any, w: World) -> object:
    """A valid value for a parameter typed *hint*, when its name says nothing."""
    kinds = _members(hint)
    if type(None) in kinds:
        return None
    for kind in kinds:
        origin = typing.get_origin(kind) or kind
        if origin is collections.abc.Callable:
            return coroutine_function if _wants_coroutine(kind) else plain
        if kind is bool:
            return False
        if kind is int:
            return 0
        if kind is float:
            return 1.0
        if kind is str:
            return f"validate-{w.n}"
        if kind is DeviceObject:
            return w.device
        if kind is Irp:
            return w.irp()
        if kind is airp.IrpAllocator:
            return airp.IrpAllocator()
        if kind is airp.LowResourcesSimulation:
            return airp.LowResourcesSimulation()
        if kind is airp.FileObject:
            return airp.FileObject(w.device)
        if origin in (tuple, list, collections.abc.Iterable, collections.abc.Collection, collections.abc.Sequence):
            return ()
        if kind in (bytes, bytearray, memoryview):
            return b""
    raise LookupError(f"no valid value for {hint!r}: give one by name or in the target")


async def valid_arguments(target: Target, w: World) -> dict[str, object]:
    """The valid arguments of *target*: every parameter without a default, and the target's own."""
    signature = inspect.signature(target.spec)
    hints = _hints(target.spec)
    arguments: dict[str, object] = {}
    for name, parameter in signature.parameters.items():
        if name in ("self", "cls") or parameter.kind in (parameter.VAR_KEYWORD,):
            continue
        if name in target.valid:
            arguments[name] = target.valid[name](w)
        elif parameter.default is not parameter.empty or parameter.kind is parameter.VAR_POSITIONAL:
            continue
        elif name in BY_NAME:
            arguments[name] = BY_NAME[name](w)
        else:
            arguments[name] = _valid_by_type(hints.get(name, Any), w)
        if inspect.iscoroutine(arguments[name]):
            arguments[name] = await arguments[name]  # type: ignore[misc]
    return arguments


# -- bad values -----------------------------------------------------------------------------------


def _members(hint: Any) -> tuple[Any, ...]:
    """The members of a union, or the hint itself."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return tuple(m for arg in typing.get_args(hint) for m in _members(arg))
    if hint is None:
        return (type(None),)
    return (hint,)


def _wants_coroutine(callable_hint: Any) -> bool:
    args = typing.get_args(callable_hint)
    if not args:
        return False
    result = typing.get_origin(args[-1]) or args[-1]
    return result in (collections.abc.Awaitable, collections.abc.Coroutine)


def _accepts(members: tuple[Any, ...], kind: type) -> bool:
    for member in members:
        origin = typing.get_origin(member) or member
        if isinstance(origin, type) and not getattr(origin, "_is_protocol", False) and issubclass(kind, origin):
            return True
    return False


def _loose(members: tuple[Any, ...]) -> bool:
    return any(m is Any or m is object or isinstance(m, typing.TypeVar) for m in members)


#: Parameters counted from zero or one: a negative value is wrong whatever the type says.
NON_NEGATIVE = {
    "stack_size", "count", "length", "offset", "output_length", "limit", "max_idle", "small_depth",
    "large_depth", "capacity", "per_device", "high_water_mark", "number", "information", "requests",
}  # fmt: skip


@dataclass(frozen=True)
class Bad:
    """One ill-typed value and how to show it in a test id."""

    label: str
    make: Factory


def bad_values(name: str, hint: Any, w_device: bool = True) -> list[Bad]:
    members = _members(hint)
    if _loose(members) or bool in members:
        # A flag is a truth value, as everywhere in Python: not probed.
        return []
    found: list[Bad] = []
    if type(None) not in members:
        found.append(Bad("None", lambda w: None))
    if not _accepts(members, str) and not any((typing.get_origin(m) or m) is os.PathLike for m in members):
        found.append(Bad("str", lambda w: "bogus"))
    elif str in members and not _accepts(members, int):
        found.append(Bad("int-for-str", lambda w: 3))
    callables = [m for m in members if (typing.get_origin(m) or m) is collections.abc.Callable]
    for callable_hint in callables:
        if _wants_coroutine(callable_hint):
            found.append(Bad("plain-function", lambda w: plain))
        else:
            found.append(Bad("coroutine-function", lambda w: coroutine_function))
    if _accepts(members, DeviceObject) and not _accepts(members, Irp):
        found.append(Bad("an-Irp", lambda w: w.irp()))
    if _accepts(members, Irp) and not _accepts(members, DeviceObject):
        found.append(Bad("a-DeviceObject", lambda w: w.lower))
    numeric = _accepts(members, int)
    if numeric and not _accepts(members, float):
        found.append(Bad("float", lambda w: 1.5))
    if numeric and name in NON_NEGATIVE:
        found.append(Bad("negative", lambda w: -1))
    if _accepts(members, float) and float in members:
        found.append(Bad("nan", lambda w: math.nan))
        found.append(Bad("negative-float", lambda w: -1.0))
    if bytes in members:
        found.append(Bad("int-for-bytes", lambda w: 3))
    elif not numeric and any((typing.get_origin(m) or m) in COLLECTIONS for m in members):
        found.append(Bad("int-for-collection", lambda w: 3))
    return found


COLLECTIONS = (
    tuple,
    list,
    collections.abc.Iterable,
    collections.abc.Collection,
    collections.abc.Sequence,
    collections.abc.Mapping,
)


# -- the targets ----------------------------------------------------------------------------------


def function(name: str, /, **valid: Factory) -> Target:
    func = getattr(airp, name)
    return Target(name, lambda w: func, func, valid)


def method(cls: type, name: str, make: Callable[[World], Any], /, **valid: Factory) -> Target:
    spec = inspect.getattr_static(cls, name)
    if isinstance(spec, (classmethod, staticmethod)):
        spec = spec.__func__
    return Target(f"{cls.__name__}.{name}", lambda w: getattr(make(w), name), spec, valid)


def amethod(cls: type, name: str, make: Callable[[World], Awaitable[Any]], /, **valid: Factory) -> Target:
    spec = inspect.getattr_static(cls, name)

    async def get(w: World) -> Any:
        return getattr(await make(w), name)

    return Target(f"{cls.__name__}.{name}", lambda w: None, spec, valid, aget=get)


def constructor(cls: type, /, **valid: Factory) -> Target:
    spec = cls.__new__ if "__new__" in vars(cls) else cls.__init__
    return Target(f"{cls.__name__}()", lambda w: cls, spec, valid)


async def io_queue(w: World) -> airp.IoQueue:
    return airp.IoQueue(w.lower, queue_handler)


async def running_io_queue(w: World) -> airp.IoQueue:
    await w.run(w.lower)
    return airp.IoQueue(w.lower, queue_handler)


async def start_io_queue(w: World) -> airp.StartIoQueue:
    await w.run(w.lower)
    return airp.StartIoQueue(w.lower, "lane", start_io)


async def request(w: World) -> airp.Request:
    """A request a manual queue handed to the driver."""
    await w.run(w.lower)
    queue = airp.IoQueue(w.lower, dispatch="manual")
    irp = w.lower_irp()
    queue.insert(irp)
    taken = queue.retrieve_next_request()
    assert taken is not None
    return taken


def allocated(w: World) -> Irp:
    irp = airp.allocate_irp(w.device.stack_size + 1)
    assert irp is not None
    return irp


def overlapped(w: World) -> airp.Overlapped[bytes]:
    built = airp.build_device_io_control_request(airp.ControlCode.make(0x22, 0x800), w.device)
    assert built is not None
    return built


async def node(w: World) -> airp.DeviceNode:
    await w.enter()
    return await w.io.add_device(f"ROOT\\NODE{w.n}", function=PnpFunction())


async def started_node(w: World) -> airp.DeviceNode:
    started = await node(w)
    await w.io.start_device(started)
    return started


async def entered_io(w: World) -> IoManager:
    await w.enter()
    return w.io


async def running_lower(w: World) -> DeviceObject:
    await w.run(w.lower)
    return w.lower


async def busy_lower(w: World) -> DeviceObject:
    """``lower`` running, with a packet started (its StartIo routine has not run yet)."""
    await w.run(w.lower)
    airp.start_packet(w.lower, w.lower_irp())
    return w.lower


async def busy_start_io_queue(w: World) -> airp.StartIoQueue:
    queue = await start_io_queue(w)
    queue.start_packet(w.lower_irp())
    return queue


def associated_master(w: World) -> Irp:
    master = w.current_irp()
    assert airp.make_associated_irps(master, 2, w.lower.stack_size) is not None
    return master


def child_with_routine(w: World) -> Irp:
    child = allocated(w)
    child.set_completion_routine(plain)
    return child


async def task_io(w: World) -> airp.TaskIo:
    return await w.stack.enter_async_context(airp.task_io())


TARGETS: list[Target] = [
    # -- the I/O manager and its handles
    constructor(IoManager),
    amethod(IoManager, "add_device", entered_io, function=lambda w: PnpFunction(), name=lambda w: None),
    amethod(IoManager, "cancel_remove_device", entered_io, node=started_node),
    method(IoManager, "create_device", lambda w: w.io),
    method(IoManager, "delete_device", lambda w: w.io, device=lambda w: w.io.create_device(Disk())),
    method(IoManager, "get_device", lambda w: w.io, name=lambda w: f"\\Device\\Disk{w.n}"),
    amethod(IoManager, "invalidate_device_relations", entered_io, node=node),
    method(IoManager, "load_driver", lambda w: w.io, driver=lambda w: Disk),
    method(IoManager, "new_traced_irp", lambda w: w.io),
    method(IoManager, "open", lambda w: w.io, name=lambda w: f"\\Device\\Top{w.n}"),
    method(IoManager, "outstanding_requests", lambda w: w.io),
    amethod(IoManager, "query_remove_device", entered_io, node=started_node),
    method(IoManager, "register_stack", lambda w: w.io, function=lambda w: PnpFunction),
    amethod(IoManager, "remove_device", entered_io, node=node),
    amethod(IoManager, "start_device", entered_io, node=node),
    amethod(IoManager, "surprise_remove", entered_io, node=started_node),
    method(
        IoManager, "unload_driver", lambda w: w.io, driver=lambda w: w.io.load_driver(Disk, name=f"unloadable-{w.n}")
    ),
    amethod(airp.FileHandle, "device_control", lambda w: w.handle()),
    amethod(airp.FileHandle, "device_control_overlapped", lambda w: w.handle()),
    amethod(airp.FileHandle, "read", lambda w: w.handle()),
    amethod(airp.FileHandle, "read_overlapped", lambda w: w.handle()),
    amethod(airp.FileHandle, "write", lambda w: w.handle()),
    amethod(airp.FileHandle, "write_overlapped", lambda w: w.handle()),
    method(airp.Overlapped, "add_done_callback", overlapped, callback=lambda w: plain),
    function("build_asynchronous_fsd_request"),
    function("build_device_io_control_request"),
    function("build_synchronous_fsd_request"),
    constructor(airp.IrpPool),
    method(airp.IrpPool, "get", lambda w: airp.IrpPool(w.device)),
    method(airp.IrpPool, "put", lambda w: w.pool_irp()[0], irp=lambda w: w.pool_irp()[1]),
    method(airp.IrpPool, "send", lambda w: w.pool_irp()[0], irp=lambda w: w.pool_irp(routine=True)[1]),
    function("load_driver", name=lambda w: "ramdisk"),
    # -- IRPs, devices and drivers
    constructor(Irp),
    method(Irp, "set_cancel_routine", lambda w: w.current_irp()),
    method(Irp, "set_completion_routine", lambda w: w.irp()),
    method(Irp, "stack_location", lambda w: w.irp()),
    constructor(Driver),
    method(Driver, "set_dispatch", lambda w: Disk(), routine=lambda w: coroutine_function),
    function("dispatch", majors=lambda w: (IrpMajor.READ,)),
    constructor(DeviceObject, driver=lambda w: Disk()),
    constructor(airp.FileObject),
    function("attach_device"),
    function("detach_device"),
    function("delete_device", device=lambda w: w.io.create_device(Disk())),
    function("get_attached_device"),
    constructor(airp.IrpAllocator),
    method(airp.IrpAllocator, "allocate_irp", lambda w: airp.IrpAllocator()),
    constructor(airp.LowResourcesSimulation),
    function("allocate_irp"),
    function("free_irp", irp=allocated),
    function("reuse_irp", irp=allocated),
    function("make_associated_irp"),
    function("make_associated_irps"),
    function("associated_irps"),
    function("arm_master_cancel", master=associated_master),
    function("cancel_associated_irps", device=lambda w: None),
    function("cancel_with", parent=lambda w: w.current_irp(), child=child_with_routine),
    function("complete_request"),
    function("cancel_irp"),
    constructor(airp.NtStatus, value=lambda w: 0),
    function("nt_success"),
    function("nt_error"),
    function("nt_warning"),
    function("nt_information"),
    function("next_pnp_state", state=lambda w: airp.PnpState.NOT_STARTED, minor=lambda w: airp.PnpMinor.START_DEVICE),
    method(airp.ControlCode, "make", lambda w: airp.ControlCode, function=lambda w: 0x800),
    method(airp.ControlCode, "parse", lambda w: airp.ControlCode),
    # -- the async shell: sending, waiting, timeouts
    function("call_driver"),
    function("call_driver_and_wait"),
    function("call_driver_with_timeout"),
    function("send_irp"),
    function("pass_down", irp=lambda w: w.current_irp()),
    function("forward_and_wait", device=lambda w: w.lower, irp=lambda w: w.current_irp()),
    function("forward_with_timeout", device=lambda w: w.lower, irp=lambda w: w.current_irp()),
    function("wait_for_irp", irp=lambda w: w.completed_irp()),
    function("wait_or_cancelled", irp=lambda w: w.current_irp(), seconds=lambda w: 0.5),
    function("is_disowned"),
    function("delay", seconds=lambda w: 0.5),
    function("set_cancel_wait_limit", seconds=lambda w: 300.0),
    amethod(airp.TaskIo, "cancel", task_io),
    # -- cancel-safe queues
    function("mark_irp_cancelable", irp=lambda w: w.current_irp()),
    function("unmark_irp_cancelable", irp=lambda w: w.cancelable_irp()),
    constructor(airp.CancelSafeQueue),
    constructor(airp.IrpQueue),
    method(airp.IrpQueue, "insert", lambda w: airp.IrpQueue(), irp=lambda w: w.current_irp()),
    method(airp.IrpQueue, "remove", lambda w: w.csq_context()[0], context=lambda w: w.csq_context()[1]),
    method(airp.IrpQueue, "complete_all", lambda w: airp.IrpQueue()),
    # -- device task groups, StartIo, KMDF queues, remove locks
    function("run_device", device=lambda w: w.lower),
    function("device_tasks"),
    constructor(airp.DeviceTasks),
    constructor(airp.StartIoQueue, device=lambda w: w.lower, routine=lambda w: start_io, name=lambda w: "lane"),
    amethod(airp.StartIoQueue, "start_packet", start_io_queue, irp=lambda w: w.lower_irp()),
    amethod(airp.StartIoQueue, "start_next_packet", busy_start_io_queue),
    function("start_packet", device=running_lower, irp=lambda w: w.lower_irp()),
    function("start_next_packet", device=busy_lower),
    function("start_next_packet_by_key", device=busy_lower),
    function("complete_and_start_next", device=busy_lower, irp=lambda w: w.lower_irp()),
    function("set_start_io_attributes", device=lambda w: w.lower),
    function("device_queue", device=lambda w: w.lower),
    method(airp.DeviceQueue, "insert_by_key", lambda w: airp.DeviceQueue(), entry=lambda w: w.irp()),
    method(airp.DeviceQueue, "remove_by_key", lambda w: w.busy_device_queue()),
    method(airp.DeviceQueue, "remove_by_key_if_busy", lambda w: w.busy_device_queue()),
    constructor(airp.IoQueue, device=lambda w: w.lower, handler=lambda w: queue_handler),
    amethod(airp.IoQueue, "insert", running_io_queue, irp=lambda w: w.lower_irp()),
    amethod(airp.IoQueue, "drain", io_queue),
    amethod(airp.IoQueue, "purge", io_queue),
    amethod(airp.IoQueue, "stop", io_queue),
    amethod(airp.IoQueue, "stop_and_purge", io_queue),
    amethod(airp.IoQueue, "retrieve_request_by_file_object", io_queue),
    amethod(airp.Request, "complete", request),
    amethod(airp.Request, "forward_to_queue", request, destination=lambda w: airp.IoQueue(w.lower, dispatch="manual")),
    amethod(airp.Request, "mark_cancelable", request, callback=lambda w: plain),
    constructor(airp.RemoveLock),
    # -- the tools
    constructor(airp.IrpMonitor),
    method(airp.IrpMonitor, "for_irp", lambda w: airp.IrpMonitor()),
    method(airp.IrpMonitor, "queue_waits", lambda w: airp.IrpMonitor()),
    method(airp.IrpMonitor, "spans", lambda w: airp.IrpMonitor()),
    function("format_trace"),
    function("chrome_trace", monitor=lambda w: airp.IrpMonitor()),
    function("write_chrome_trace", monitor=lambda w: airp.IrpMonitor(), path_or_file=lambda w: w.path("trace.json")),
    function("draw_timeline", source=lambda w: airp.IrpMonitor(), out=lambda w: w.path("timeline.svg")),
    constructor(airp.Verifier),
    method(airp.Verifier, "cover", lambda w: airp.Verifier(), allocators=lambda w: (airp.IrpAllocator(),)),
    method(airp.Verifier, "verifies", lambda w: airp.Verifier()),
    function("parse_simulation", text=lambda w: SIMULATION),
    function("load_simulation", path=lambda w: w.simulation_file()),
    method(airp.SimulationDescription, "with_options", lambda w: airp.parse_simulation(SIMULATION)),
]

#: (target, parameter) pairs not probed, with why: the annotation is deliberately loose there.
#: (Parameters typed ``Any`` or ``object``, a context, a tag, a peek context, are not probed
#: anywhere; nor are flags, which take a truth value as everywhere in Python.)
LOOSE: dict[tuple[str, str], str] = {}

#: Words a message may use for a parameter instead of its name: (target, parameter) -> aliases.
#: A parameter whose name ends in "s" (``majors``, ``allocators``) may also be named singular.
ALIASES: dict[tuple[str, str], tuple[str, ...]] = {
    ("dispatch", "majors"): ("major function code",),
    ("delay", "seconds"): ("delay must be",),  # airp.delay(seconds): "delay must be >= 0"
    ("write_chrome_trace", "path_or_file"): ("a path or a text file",),
    ("Irp.stack_location", "number"): ("stack location",),
    ("NtStatus()", "value"): ("an NTSTATUS must be",),
}

#: Exceptions other than the clear ones that a (target, parameter) raises by design.
ALSO_CLEAR: dict[tuple[str, str], tuple[type[BaseException], ...]] = {
    # An index out of range is an IndexError, as for a list; the message names the location and
    # the range.  A wrong type is a TypeError.
    ("Irp.stack_location", "number"): (IndexError,),
}

#: Bad calls known not to be refused clearly yet, each with the fix it needs (none today).  Checked
#: strictly: a call listed here that is refused clearly now fails the test until it is taken off.
ELSEWHERE: dict[str, str] = {}

#: Public callables that are not probed at all, with why.
NOT_PROBED: dict[str, str] = {
    "IoManager.allocate_irp": "deprecated alias of IoManager.new_traced_irp, which is probed",
    "IoQueue.add": "deprecated alias of IoQueue.insert, which is probed",
    "CancelSafeQueue.drain": "deprecated alias of CancelSafeQueue.complete_all, which is probed",
    "mark_cancelable": "deprecated alias of mark_irp_cancelable, which is probed",
    "unmark_cancelable": "deprecated alias of unmark_irp_cancelable, which is probed",
    "simulate": "runs its own event loop, so it cannot be called from this test's; its arguments are"
    " checked by tests/test_simulate.py",
    "start_io_cancel_routine": "a cancel routine airp hands to cancel_irp, which passes it (device, irp)",
    "RootBus.pnp": "the root bus driver's dispatch routine, which call_driver calls",
    "Request()": "made by the queues; a driver gets requests from them",
    "FileHandle()": "made by IoManager.open",
    "Overlapped()": "made by the I/O manager and the build helpers",
    "DeviceNode()": "made by the PnP manager (IoManager.add_device)",
    "RemoveLockHold()": "made by RemoveLock.hold",
    "SimulationReport.write_json": "needs a whole simulation run to have a report to write",
    "Overlapped.remove_done_callback": "compares its callback with ==, as asyncio.Future.remove_done_callback:"
    " what was never added is removed 0 times",
    "CancelSafeQueue.remove_next": "its one parameter, the peek context, is the storage's to interpret (Any)",
    "CancelSafeQueue.cancel_all": "its one parameter, the peek context, is the storage's to interpret (Any)",
    "RemoveLock.acquire": "its one parameter, the tag, is any object (IoAcquireRemoveLock's Tag)",
    "RemoveLock.release": "its one parameter, the tag, is any object",
    "RemoveLock.release_and_wait": "its one parameter, the tag, is any object",
    "RemoveLock.hold": "its one parameter, the tag, is any object",
    "DeviceQueue.insert": "the entry is any object (a DeviceQueue[T] holds what the driver puts in)",
    "DeviceQueue.remove_entry": "the entry is any object",
    "DeviceQueue.sort_key": "the entry is any object",
}

#: Hooks a watcher receives from airp (MonitorHooks), and the storage callbacks a cancel-safe
#: queue calls: airp calls them, with what it has, on the request's path.
CALLED_BY_AIRP = frozenset(
    (
        "watch", "linked", "dispatching", "dispatched", "queued", "dequeued", "completing", "routine_ran",
        "completed", "cancelled", "freed", "reused", "insert_irp", "remove_irp", "peek_next_irp",
        "complete_canceled_irp",
    )
)  # fmt: skip


# -- the property ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    label: str
    verdict: str  # "unclear" or "accepted"
    detail: str


CLEAR_TYPES = (TypeError, ValueError, airp.BugCheck, airp.NtStatusError)


def _names_parameter(message: str, parameter: str, aliases: tuple[str, ...]) -> bool:
    text = message.lower()
    candidates = [parameter, parameter.replace("_", " "), *aliases]
    if parameter.endswith("s"):
        candidates.append(parameter[:-1])
    return any(c.lower() in text for c in candidates)


def _names_value(message: str, value: object) -> bool:
    return type(value).__name__ in message or repr(value) in message


async def _call(target: Target, w: World, arguments: dict[str, object]) -> object:
    func = await target.aget(w) if target.aget is not None else target.get(w)
    signature = inspect.signature(target.spec)
    positional: list[object] = []
    keywords: dict[str, object] = {}
    skipped = False  # a parameter left to its default: the ones after it go by keyword
    for name, parameter in signature.parameters.items():
        if name in ("self", "cls"):
            continue
        if name not in arguments:
            skipped = True
            continue
        if parameter.kind is parameter.VAR_POSITIONAL:
            positional.extend(arguments[name])  # type: ignore[call-overload]
        elif parameter.kind is parameter.POSITIONAL_ONLY or (
            parameter.kind is parameter.POSITIONAL_OR_KEYWORD and not skipped
        ):
            positional.append(arguments[name])
        else:
            keywords[name] = arguments[name]
    result = func(*positional, **keywords)
    # A coroutine, or io.open's opening; an Irp or an Overlapped is awaitable too, but is a result.
    if inspect.iscoroutine(result) or type(result).__name__ == "_Opening":
        with anyio.fail_after(600):
            result = await result
    return result


@contextlib.contextmanager
def _caught_unraisable() -> Iterator[list[str]]:
    """What reaches ``sys.unraisablehook`` meanwhile: a failure that came out later."""
    seen: list[str] = []
    old = sys.unraisablehook
    sys.unraisablehook = lambda report: seen.append(f"{report.exc_type.__name__}: {report.exc_value}")
    try:
        yield seen
    finally:
        sys.unraisablehook = old


def _judge(
    target: Target, name: str, label: str, value: object, error: BaseException | None, later: list[str]
) -> Outcome | None:
    """``None`` if the bad call was refused clearly, else what was wrong with it."""
    if error is None:
        after = f"; later: {later}" if later else ""
        return Outcome(label, "accepted", f"accepted {value!r}{after}")
    if not isinstance(error, CLEAR_TYPES + ALSO_CLEAR.get((target.name, name), ())):
        return Outcome(label, "unclear", f"{type(error).__name__}: {error}")
    message = str(error)
    if not _names_parameter(message, name, ALIASES.get((target.name, name), ())):
        return Outcome(label, "unclear", f"{type(error).__name__}: {message} (the parameter is not named)")
    if not _names_value(message, value):
        return Outcome(label, "unclear", f"{type(error).__name__}: {message} (what it got is not said)")
    return None


async def probe(target: Target) -> tuple[list[Outcome], int]:
    """Call *target* once validly, then once per bad value; return the outcomes that break the
    property and how many bad calls were made."""
    hints = _hints(target.spec)
    signature = inspect.signature(target.spec)
    # The valid call: it shows that the world and the valid values are right.
    w = World()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            await _call(target, w, await valid_arguments(target, w))
    except Exception as error:
        raise AssertionError(f"the valid call of {target.name} failed: {type(error).__name__}: {error}") from error
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            await w.close()
    failures: list[Outcome] = []
    calls = 0
    for name, parameter in signature.parameters.items():
        if name in ("self", "cls") or parameter.kind is parameter.VAR_KEYWORD or (target.name, name) in LOOSE:
            continue
        for bad in bad_values(name, hints.get(name, Any)):
            calls += 1
            w = World()
            arguments = await valid_arguments(target, w)
            value = bad.make(w)
            arguments[name] = (value,) if parameter.kind is parameter.VAR_POSITIONAL else value
            raised: BaseException | None = None
            with warnings.catch_warnings(), _caught_unraisable() as later:
                # A warning is an error here, as under the suite's filterwarnings = error.
                warnings.simplefilter("error")
                try:
                    await _call(target, w, arguments)
                except Exception as error:
                    raised = error
                finally:
                    if value is coroutine_function:
                        gc.collect()  # a coroutine made and dropped is reported now, not in the next test
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                await w.close()
            outcome = _judge(target, name, f"{target.name}({name}={bad.label})", value, raised, later)
            if outcome is not None:
                failures.append(outcome)
    return failures, calls


@pytest.fixture(scope="module", autouse=True)
def _directory(tmp_path_factory: pytest.TempPathFactory) -> None:
    World.directory = tmp_path_factory.mktemp("arguments")


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
async def test_bad_arguments_are_refused_clearly(target: Target) -> None:
    """Every ill-typed argument of *target* is refused at the call, with the parameter named."""
    failures, calls = await probe(target)
    assert calls, f"{target.name}: nothing to probe (list it in NOT_PROBED, with why)"
    known = {label for label in ELSEWHERE if label.startswith(f"{target.name}(")}
    failed = {f.label for f in failures}
    fixed = sorted(known - failed)
    assert not fixed, f"refused clearly now: take {fixed} off ELSEWHERE"
    failures = [f for f in failures if f.label not in known]
    report = "\n".join(f"  {f.verdict:9} {f.label}: {f.detail}" for f in failures)
    assert not failures, f"{len(failures)} of {calls} bad calls of {target.name} not refused clearly:\n{report}"


# -- keeping it so ----------------------------------------------------------------------------------


def _public_callables() -> dict[str, Callable[..., Any]]:
    """Every public function of ``airp``, the constructor of every class a user makes, and every
    public method (with a parameter to get wrong) of those classes, by the name TARGETS uses."""
    found: dict[str, Callable[..., Any]] = {}
    for name in sorted(vars(airp)):
        obj = getattr(airp, name)
        if name.startswith("_") or not callable(obj):
            continue
        if inspect.isfunction(obj):
            if _takes_arguments(obj):
                found[name] = obj
            continue
        if (
            not isinstance(obj, type)
            or issubclass(obj, (BaseException, enum.Enum))
            or getattr(obj, "_is_protocol", False)
        ):
            continue  # exceptions (airp raises them), enums, protocols
        # Records (dataclasses: statistics, trace records, reports, a request's parameters; named
        # tuples: IoStatus, ControlCode) are built from what airp or the driver already has: their
        # fields are not checked, but their methods are.
        record = dataclasses.is_dataclass(obj) or issubclass(obj, tuple)
        make = obj.__new__ if "__new__" in vars(obj) else obj.__init__  # NtStatus is made by __new__
        if not record and _takes_arguments(make):
            found[f"{name}()"] = make
        for method_name, attribute in vars(obj).items():
            if method_name.startswith("_") or method_name in CALLED_BY_AIRP:
                continue
            function = attribute.__func__ if isinstance(attribute, (classmethod, staticmethod)) else attribute
            if inspect.isfunction(function) and _takes_arguments(function):
                found[f"{name}.{method_name}"] = function
    # Methods a subclass inherits are probed on the subclass (IrpQueue for CancelSafeQueue).
    return found


def _takes_arguments(function: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):  # pragma: no cover - every public callable has a signature
        return False
    return any(name not in ("self", "cls") for name in parameters)


def test_every_public_callable_is_probed_or_listed() -> None:
    """A public callable added later is probed from the start: it must be a target, or listed in
    NOT_PROBED with why."""
    probed = {target.name.replace("IrpQueue.", "CancelSafeQueue.") for target in TARGETS} | {t.name for t in TARGETS}
    missing = sorted(name for name in _public_callables() if name not in probed and name not in NOT_PROBED)
    assert not missing, f"public callables neither probed nor listed in NOT_PROBED: {missing}"
    unknown = sorted(name for name in NOT_PROBED if name not in _public_callables())
    assert not unknown, f"NOT_PROBED lists what is not a public callable (any more): {unknown}"


def test_the_probe_makes_many_bad_calls() -> None:
    """The enumeration is not empty by accident: it makes hundreds of bad calls per backend."""
    count = 0
    for target in TARGETS:
        hints = _hints(target.spec)
        for name, parameter in inspect.signature(target.spec).parameters.items():
            if name in ("self", "cls") or parameter.kind is parameter.VAR_KEYWORD or (target.name, name) in LOOSE:
                continue
            count += len(bad_values(name, hints.get(name, Any)))
    assert count > 300


# -- the issue's examples, from the user's side -------------------------------------------------------


class HookRecorder:
    """A monitor of one's own: every hook of MonitorHooks, recording what it saw."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def watch(self, irp: Irp) -> Irp:
        irp._monitor = self
        self.seen.append("watch")
        return irp

    def linked(self, child: Irp, parent: Irp) -> None: ...
    def dispatching(self, irp: Irp, device: DeviceObject) -> None:
        self.seen.append("dispatching")

    def dispatched(self, irp: Irp, device: DeviceObject, status: airp.NtStatus) -> airp.NtStatus:
        return status

    def queued(self, irp: Irp, device: DeviceObject, queue: str | None) -> None: ...
    def dequeued(self, irp: Irp, device: DeviceObject, queue: str | None) -> None: ...
    def completing(self, irp: Irp) -> None: ...
    def routine_ran(self, irp: Irp, owner: DeviceObject | None, routine: object, result: int) -> None: ...
    def completed(self, irp: Irp) -> None:
        self.seen.append("completed")

    def cancelled(self, irp: Irp, routine: object, reason: str | None) -> None: ...
    def freed(self, irp: Irp) -> None: ...
    def reused(self, irp: Irp) -> None: ...


class HalfAMonitor:
    def watch(self, irp: Irp) -> Irp:
        return irp

    def __repr__(self) -> str:
        return "<HalfAMonitor>"


async def test_io_manager_refuses_a_monitor_without_the_hooks_at_once() -> None:
    """``IoManager(monitor="x")`` used to be accepted and fail at the first open, inside it."""
    for what in ("monitor", "verifier"):
        with pytest.raises(TypeError, match=rf"^{what} must be a monitor .* got str 'x', which has no watch, linked, "):
            IoManager(**{what: "x"})
        with pytest.raises(
            TypeError, match=rf"^{what} must be a monitor .* got HalfAMonitor <HalfAMonitor>, which has no linked,"
        ):
            IoManager(**{what: HalfAMonitor()})
        with pytest.raises(
            TypeError,
            match=rf"^{what} must be a monitor object .* got the class IrpMonitor: pass an instance, IrpMonitor\(\)",
        ):
            IoManager(**{what: airp.IrpMonitor})
    with pytest.raises(TypeError, match=r"^monitor must be a monitor .* got str 'x'"):
        airp.IrpAllocator(monitor="x")  # type: ignore[arg-type]
    # A monitor of one's own with every hook is a monitor: it watches the opens.
    recorder = HookRecorder()
    io = IoManager(monitor=recorder)
    io.create_device(Disk(), "\\Device\\Watched")
    async with io.open("\\Device\\Watched") as handle:
        assert await handle.read(4) == b""
    assert recorder.seen[:3] == ["watch", "dispatching", "completed"]


async def test_io_manager_refuses_an_on_error_that_cannot_run() -> None:
    async def on_error(failure: airp.RoutineFailure) -> None: ...

    with pytest.raises(TypeError, match=r"on_error must be a function \(failure\) -> None .* got coroutine function"):
        IoManager(on_error=on_error)


async def test_run_device_refuses_a_bad_on_error_at_once_and_leaves_the_device_as_it_was() -> None:
    """``run_device(device, on_error="x")`` used to be accepted and fail at the first routine failure."""
    io = IoManager()
    device = io.create_device(Disk(), "\\Device\\Run")

    async def async_on_error(failure: airp.RoutineFailure) -> None: ...

    with pytest.raises(
        TypeError, match=r"^on_error must be a function \(failure\) -> None .* got str 'x', which is not callable"
    ):
        airp.run_device(device, on_error="x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^on_error must be a function .* got coroutine function .*async_on_error"):
        airp.run_device(device, on_error=async_on_error)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^grace must be a number of seconds >= 0, got nan"):
        airp.run_device(device, grace=math.nan)
    with pytest.raises(TypeError, match=r"^removal_status must be an NTSTATUS \(an int\) or None, got str 'x'"):
        airp.run_device(device, removal_status="x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^run_device\(device\): device must be a DeviceObject, got NoneType None"):
        airp.run_device(None)  # type: ignore[arg-type]
    # Nothing was changed by the refusals: the device still runs, once, with what is given now.
    failures: list[airp.RoutineFailure] = []
    async with airp.run_device(device, on_error=failures.append) as tasks:
        assert tasks.on_error == failures.append
        assert tasks.removal_status == airp.STATUS_NO_SUCH_DEVICE
        assert tasks.grace is None


async def test_allocate_irp_refuses_an_allocator_that_is_not_one() -> None:
    with pytest.raises(TypeError, match=r"allocator must be an airp.IrpAllocator or None, got str 'x'"):
        airp.allocate_irp(1, allocator="x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"allocator must be an airp.IrpAllocator or None, got str 'x'"):
        airp.make_associated_irp(Irp(2), 1, allocator="x")  # type: ignore[arg-type]


async def test_the_issues_other_examples_name_the_parameter() -> None:
    w = World()
    irp = w.current_irp()
    with pytest.raises(TypeError, match=r"^device must be a DeviceObject, got NoneType None"):
        airp.StartIoQueue(None, "lane", start_io)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^pass_down\(device, irp\): device must be .*, got NoneType None"):
        await airp.pass_down(None, irp)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^pass_down\(device, irp\): irp must be an Irp, got NoneType None"):
        await airp.pass_down(w.device, None)  # type: ignore[arg-type]
    # forward_and_wait is IoForwardIrpSynchronously: a non-IRP is call_driver's bug check 0xC9/0x03,
    # raised before the IRP is touched, as it names the call.
    with pytest.raises(airp.BugCheck, match=r"forward_and_wait was given NoneType None, not an Irp") as caught:
        await airp.forward_and_wait(w.lower, None)  # type: ignore[arg-type]
    assert caught.value.code == airp.BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION
    with pytest.raises(airp.BugCheck, match=r"forward_and_wait with no device object \(device is None\)"):
        await airp.forward_and_wait(None, irp)  # type: ignore[arg-type]
    # Refused before the IRP was touched: no completion routine armed, no location copied.
    assert irp.next_stack_location.completion_routine is None
    await w.close()


async def test_a_timed_call_with_no_device_fails_at_once_instead_of_waiting_the_cancel_wait_limit() -> None:
    """``call_driver_with_timeout(None, irp, 5)`` armed the IRP's routine, failed, then waited the
    whole cancel-wait limit for an IRP nobody had and warned of a driver ignoring cancellation."""
    w = World()
    irp = w.irp()
    before = anyio.current_time()
    with pytest.raises(airp.BugCheck, match=r"call_driver_with_timeout with no device object"):
        await airp.call_driver_with_timeout(None, irp, 5)  # type: ignore[arg-type]
    assert anyio.current_time() == before
    assert irp.next_stack_location.completion_routine is None
    await w.close()
