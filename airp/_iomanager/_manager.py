"""The I/O manager: the device namespace, handles, and the requester's calls (DESIGN layer 3)."""

from __future__ import annotations

import math
import warnings
import weakref
from collections.abc import Callable, Generator
from types import TracebackType
from typing import Any, TypeVar, overload

import anyio
import anyio.lowlevel

from .._machine._arguments import check_hooks, check_plain_function
from .._machine._bugcheck import chain_follow_on
from .._machine._cancel import cancel_irp
from .._machine._codes import DeviceFlags, IrpMajor
from .._machine._device import DeviceObject, delete_device, get_attached_device
from .._machine._driver import Driver
from .._machine._errors import NtStatusError
from .._machine._file import FileObject
from .._machine._irp import Irp
from .._machine._misuse import must_be
from .._machine._monitor import MonitorHooks, combine_hooks
from .._machine._pnp import PnpState
from .._machine._status import (
    STATUS_DELETE_PENDING,
    STATUS_DEVICE_NOT_READY,
    STATUS_NO_SUCH_DEVICE,
    STATUS_OBJECT_NAME_COLLISION,
    STATUS_OBJECT_NAME_NOT_FOUND,
    STATUS_PENDING,
    nt_success,
)
from .._shell._call import call_driver
from .._shell._device_tasks import RoutineFailure
from .._shell._requester_cancel import (
    _IRP_LIMIT,
    _check_limit,
    _current_task_io,
    _disown,
    call_driver_for_requester,
    cancel_and_wait,
    current_effective_deadline,
    get_cancel_wait_limit,
    holding_device,
    is_disowned,
)
from .._shell._run_clock import add_deadlock_reporter
from .._shell._virtual_time import DeadlockFindings
from .._shell._waiter import new_waiter
from ._pnp import DeviceNode, DriverSpec, PnpManager, StackDescription
from ._requests import (
    Overlapped,
    build_device_control_request,
    build_read_write_request,
    check_returned_status,
    count_result,
)

__all__ = ["FileHandle", "IoManager"]

_E = TypeVar("_E")

#: FILE_DEVICE_UNKNOWN
DEFAULT_DEVICE_TYPE = 0x22


def _check_spec(what: str, spec: object) -> None:
    """Refuse what names no driver: a plugin name, a Driver subclass or a Driver object does."""
    if not (isinstance(spec, (str, Driver)) or (isinstance(spec, type) and issubclass(spec, Driver))):
        raise must_be(what, "a driver: a plugin name, a Driver subclass or a Driver object", spec)


def _filters(what: str, filters: object) -> tuple[DriverSpec, ...]:
    """A filter list as a tuple; a str (a lone plugin name) or anything not a list is refused."""
    if not isinstance(filters, (tuple, list)):
        raise must_be(what, "a tuple or list of drivers (plugin names, Driver subclasses or objects)", filters)
    for spec in filters:
        _check_spec(f"each of {what}", spec)
    return tuple(filters)


def _check_node(node: object, what: str) -> None:
    if not isinstance(node, DeviceNode):
        raise must_be(f"{what}(node): node", "a DeviceNode (what io.add_device returned, or one of io.device_nodes)", node)


class IoManager:
    """The requester's side of airp: names devices, opens them, builds and sends requests.

    An I/O manager is a plain object; make one per application or per test.  It holds no event
    loop state, so it can be created outside a running loop.

    :param monitor: an :class:`~airp.IrpMonitor` that every IRP built here reports to, or
        ``None`` for no tracing (the default; costs one ``is None`` test per layer).
    :param verifier: an :class:`~airp.Verifier` (Driver Verifier, reference 10) that watches every
        IRP built here, or ``None`` (the default).  It is typed by the machine's ``MonitorHooks``
        so that this layer does not import the tools; with *monitor* too, both watch each IRP
        (the verifier first, so that the monitor sees the pending it forces).
    :param cancel_wait_limit: how long, in seconds, a requester waits for a cancelled request of
        this manager to come back before disowning it (``None``, the default: the run's limit,
        :func:`~airp.set_cancel_wait_limit`).  It applies to every request sent through this
        manager's handles, to IRPs made by :meth:`new_traced_irp`, and bounds each handle's
        close; unlike :func:`~airp.set_cancel_wait_limit` it can be given before the run starts.
        It wins over the run's limit (the full precedence is in
        :func:`~airp.set_cancel_wait_limit`).  Use ``math.inf`` to wait forever.
    :param on_error: called with each :class:`~airp.RoutineFailure` of a device whose queues the
        PnP manager runs (a StartIo routine or queue handler raised; its IRP has been completed
        with STATUS_INTERNAL_ERROR), as it happens: ``run_device``'s ``on_error`` for the devices
        of ``io.start_device``.  A device whose driver set its own
        (``airp.device_tasks(device).on_error = ...`` in ``add_device``) keeps it.  Either way
        the failure stays with its device: that device's queue goes on with its next IRP, and
        every other device and requester goes on.  Without any ``on_error``, the failures are
        kept in :attr:`routine_failures` and raised as one :class:`~airp.DeviceRoutineError` when
        the ``async with io`` block ends, after every device has been removed (not when the
        block itself raised).  A callback that raises is a crash of the device's task group: it
        ends the block, as a bug check does.
    :raises ValueError: if *cancel_wait_limit* is negative or NaN.
    :raises TypeError: if *cancel_wait_limit* is not a number, *on_error* is not a plain function
        or ``None``, or *monitor* or *verifier* is not a monitor (an object with every hook of
        ``MonitorHooks``, as :class:`~airp.IrpMonitor` and :class:`~airp.Verifier` have) or
        ``None``: each is checked here, not at the first open.
    """

    def __init__(
        self,
        *,
        monitor: MonitorHooks | None = None,
        verifier: MonitorHooks | None = None,
        cancel_wait_limit: float | None = None,
        on_error: Callable[[RoutineFailure], object] | None = None,
    ) -> None:
        if on_error is not None and not callable(on_error):
            raise TypeError(
                f"IoManager's on_error is a callable (failure: airp.RoutineFailure) -> None, or None;"
                f" got {type(on_error).__name__} {on_error!r}"
            )
        check_plain_function(
            "IoManager's on_error", on_error, signature="(failure) -> None", why="it is called as each failure happens, and cannot await"
        )
        # Checked here: a monitor without the hooks used to fail at the first open, inside it.
        check_hooks("monitor", monitor)
        check_hooks("verifier", verifier)
        #: Called with each routine failure of a PnP-hosted device without an on_error of its own.
        self.on_error = on_error
        self.monitor = monitor
        self.verifier = verifier
        # What watches the IRPs built here: nothing, one of the two, or both through a HookChain.
        self._hooks = combine_hooks(verifier, monitor)
        #: This manager's cancel-wait limit, or ``None`` to use the run's.
        self.cancel_wait_limit: float | None = (
            None if cancel_wait_limit is None else _check_limit(cancel_wait_limit, "IoManager's cancel_wait_limit")
        )
        self._names: dict[str, DeviceObject] = {}
        # The file objects requests were sent for, until they are closed with none left in flight.
        self._files: dict[FileObject, None] = {}
        #: The Plug and Play manager: loaded drivers, registered stacks, device nodes.
        self.pnp = PnpManager(self)

    # -- running (Plug and Play) -------------------------------------------------------------

    async def __aenter__(self) -> IoManager:
        """Run the I/O manager: ``async with IoManager() as io:``.

        Inside the block the PnP manager can start devices, whose queues (``run_device``) run in
        the block's task group.  Leaving the block removes every device node still present,
        children first (IRP_MN_REMOVE_DEVICE; a started node is first sent
        IRP_MN_SURPRISE_REMOVAL if handles are still open on it), so that every queued IRP
        completes with STATUS_NO_SUCH_DEVICE and every device's workers have ended.

        A bug check while removing does not stop the removal of the other nodes: once every
        node is removed, the first is raised (with the block's own exception, if any, as its
        ``__context__``).  Otherwise the block's own exception comes out as it was raised, with
        its cause and context.  Routine failures nobody heard of (see *on_error*) are raised last,
        as a :class:`~airp.DeviceRoutineError`, when the block itself ended without one.

        On cancellation: the removal at the block's end runs shielded to its end.
        """
        await self.pnp.__aenter__()
        _register_in_run(self)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> bool | None:
        return await self.pnp.__aexit__(exc_type, exc, tb)

    def load_driver(self, driver: DriverSpec, /, *, name: str | None = None, **params: Any) -> Driver:
        """Load a driver (``DriverEntry``): one driver object serves all the devices of its kind.

        :param driver: a plugin name from the ``airp.drivers`` entry-point group, a
            :class:`~airp.Driver` subclass, or a driver object.
        :param name: the name stacks refer to it by (default: the plugin name, the class name, or
            the driver's ``name``).
        :param params: passed to the class when it is constructed here.
        :returns: the driver object.
        :raises LookupError: for an unknown plugin name (the message lists the installed ones).
        :raises ValueError: if another driver is already loaded under that name.
        :raises TypeError: if *driver* is none of the three, parameters come with an object, or
            *name* is not a str.
        """
        if name is not None and not isinstance(name, str):
            raise must_be("load_driver(driver, name=...): name", "a str or None", name)
        return self.pnp.load_driver(driver, name, **params)

    async def unload_driver(self, driver: Driver | str) -> None:
        """Unload a driver: run its ``unload()`` (sync or async) and forget it.

        Refused while the driver still has devices, or while IRPs of its devices'
        :class:`~airp.IrpPool` objects are out: nothing is ever unloaded from under an IRP.

        On cancellation: ``unload()`` runs shielded to its end, then the cancellation propagates.

        :param driver: the driver object, or the name it was loaded under.
        :raises UnloadRefused: naming the devices and IRPs still held.
        :raises LookupError: for a name no driver was loaded under.
        :raises TypeError: if *driver* is neither a Driver nor a str.
        """
        if not isinstance(driver, (Driver, str)):
            raise must_be("unload_driver(driver): driver", "an airp.Driver or the name it was loaded under", driver)
        await self.pnp.unload_driver(driver)

    def register_stack(
        self,
        hardware_id: str,
        *,
        function: DriverSpec,
        lower_filters: tuple[DriverSpec, ...] | list[DriverSpec] = (),
        upper_filters: tuple[DriverSpec, ...] | list[DriverSpec] = (),
    ) -> None:
        """Say which drivers serve devices with *hardware_id* (what an INF file says in Windows).

        Bus drivers report children by hardware id; :meth:`add_device` uses the registration when
        it is given no drivers of its own.  Registering the same id again replaces the entry.

        :raises TypeError: if *hardware_id* is not a non-empty str, *function* is missing, or a
            filter list is not a tuple or list of drivers.
        """
        _check_spec("register_stack(function=...): function", function)
        description = StackDescription(
            function, _filters("lower_filters", lower_filters), _filters("upper_filters", upper_filters)
        )
        self.pnp.register_stack(hardware_id, description)

    async def add_device(
        self,
        hardware_id: str,
        *,
        name: str | None = None,
        function: DriverSpec | None = None,
        lower_filters: tuple[DriverSpec, ...] | list[DriverSpec] = (),
        upper_filters: tuple[DriverSpec, ...] | list[DriverSpec] = (),
    ) -> DeviceNode:
        """Add a root-enumerated device and build its stack: a PDO, then each driver's ``add_device``.

        The PDO belongs to airp's root bus (:class:`~airp.RootBus`) and takes *name*, which handles
        open the stack by.  Each driver's ``add_device(pdo)`` (AddDevice; a plain or async
        method) runs in turn, lower filters first, then the function driver, then upper filters;
        each creates its device, attaches it to the stack with :func:`~airp.attach_device`, and
        clears ``DO_DEVICE_INITIALIZING``.  The node is NOT_STARTED until :meth:`start_device`.

        :param hardware_id: names the kind of device; without *function* the stack registered
            for it with :meth:`register_stack` is built.
        :param function: the function driver (plugin name, class or object; loaded if need be).
        :returns: the new :class:`~airp.DeviceNode`.
        :raises RuntimeError: outside ``async with io:``.
        :raises LookupError: for an unknown plugin, or a hardware id with no registered stack.
        :raises BugCheck: 0xC9 / 0x243 if an ``add_device`` left DO_DEVICE_INITIALIZING set.
        :raises NtStatusError: STATUS_OBJECT_NAME_COLLISION if *name* is taken.
        :raises TypeError: if *hardware_id* is not a non-empty str, or a filter list is not a tuple
            or list of drivers.

        On cancellation: AddDevice routines are awaited as they are; a cancelled build leaves the
        node as far as it got (remove it with :meth:`remove_device`).
        """
        if not isinstance(hardware_id, str) or not hardware_id:
            raise must_be("add_device(hardware_id): hardware_id", "a non-empty str", hardware_id)
        lower_filters = _filters("lower_filters", lower_filters)
        upper_filters = _filters("upper_filters", upper_filters)
        description = None
        if function is not None:
            _check_spec("add_device(function=...): function", function)
            description = StackDescription(function, lower_filters, upper_filters)
        elif lower_filters or upper_filters:
            raise TypeError("add_device got filters but no function driver: give function= as well")
        return await self.pnp.add_device(hardware_id, description, name)

    async def start_device(self, node: DeviceNode) -> None:
        """Send IRP_MN_START_DEVICE down *node*'s stack; on success run its queues and enumerate its children.

        The drivers start bottom-up: each passes the IRP down and finishes its own start once the
        lower drivers have (``forward_and_wait``).  Then every device of the stack that declared
        queues runs them (``run_device``) in the I/O manager's task group, and a bus driver is
        asked for its children (IRP_MN_QUERY_DEVICE_RELATIONS / BusRelations), whose stacks are
        built and started in turn.

        On cancellation: PnP requests are not cancellable; each is waited for, shielded.

        :raises NtStatusError: the status the start failed with; the stack has then been removed.
        :raises PnpStateError: if the node is not NOT_STARTED.
        :raises TypeError: if *node* is not a :class:`~airp.DeviceNode`.
        """
        _check_node(node, "start_device")
        await self.pnp.start_device(node)

    async def query_remove_device(self, node: DeviceNode) -> None:
        """Send IRP_MN_QUERY_REMOVE_DEVICE (children first): the node becomes REMOVE_PENDING.

        While it is remove-pending, opening the device is refused with STATUS_DELETE_PENDING and
        other I/O goes on.  Follow with :meth:`remove_device` or :meth:`cancel_remove_device`.

        On cancellation: PnP requests are not cancellable; each is waited for, shielded.

        :raises RemovalVetoed: if handles are open on the stack (or an open is in progress), or a
            driver failed the query (CANCEL_REMOVE_DEVICE has then been sent: nothing changed).
        :raises TypeError: if *node* is not a :class:`~airp.DeviceNode`.
        """
        _check_node(node, "query_remove_device")
        await self.pnp.query_remove(node)

    async def cancel_remove_device(self, node: DeviceNode) -> None:
        """Send IRP_MN_CANCEL_REMOVE_DEVICE: a remove-pending node is STARTED again.

        On cancellation: PnP requests are not cancellable; each is waited for, shielded.

        :raises TypeError: if *node* is not a :class:`~airp.DeviceNode`.
        """
        _check_node(node, "cancel_remove_device")
        await self.pnp.cancel_remove(node)

    async def remove_device(self, node: DeviceNode) -> None:
        """Remove *node* in order: query-remove (unless already remove-pending), then IRP_MN_REMOVE_DEVICE.

        Children are removed first.  Before REMOVE goes down, the queues of every device in the
        stack stop: queued IRPs complete with STATUS_NO_SUCH_DEVICE and IRPs in progress are
        cancelled and finished.  The drivers then detach and delete their devices (bug check
        0x21D / 0x21E otherwise, and 0x306 if REMOVE completes with a failure).  A child whose
        removal raises such a bug check does not stop the others, nor the node's own removal: the
        first is raised once all of them are removed.  For a node already surprise-removed, this
        waits until REMOVE has been sent, which happens once its last handle is closed.  A PnP
        request still going down the node's stack is waited for first (one at a time per node).

        On cancellation: PnP requests are not cancellable; each is waited for, shielded.  Waiting
        for a surprise-removed node's last handle stops.

        :raises RemovalVetoed: if the query was refused (nothing changed).
        :raises ValueError: if the node has already been removed.
        :raises BugCheck: the first lifecycle check that fired (reference 10.3); the nodes count
            as removed all the same.
        :raises TypeError: if *node* is not a :class:`~airp.DeviceNode`.
        """
        _check_node(node, "remove_device")
        await self.pnp.remove_device(node)

    async def surprise_remove(self, node: DeviceNode) -> None:
        """The device is gone: send IRP_MN_SURPRISE_REMOVAL (children first), then REMOVE once no handle is open.

        The queues of the stack stop first (queued IRPs complete with STATUS_NO_SUCH_DEVICE);
        drivers fail what they hold and refuse new I/O, but do not detach or delete (bug check
        0x241 / 0x242).  If handles are open, IRP_MN_REMOVE_DEVICE is sent when the last one
        closes (from that handle's ``close``); :meth:`DeviceNode.wait_removed` waits for it.

        On cancellation: PnP requests are not cancellable; each is waited for, shielded.

        :raises TypeError: if *node* is not a :class:`~airp.DeviceNode`.
        """
        _check_node(node, "surprise_remove")
        await self.pnp.surprise_remove(node)

    async def invalidate_device_relations(self, node: DeviceNode) -> None:
        """``IoInvalidateDeviceRelations(BusRelations)``: ask *node*'s bus driver for its children again.

        New children get their stacks built and started; children no longer reported are
        surprise-removed (and removed once their handles close).  A node is enumerated once at a
        time: a call made while an enumeration of *node* is in progress (another task's) waits
        for it, child builds and starts included, then asks the bus again.

        On cancellation: PnP requests are not cancellable; each is waited for, shielded.

        :raises TypeError: if *node* is not a :class:`~airp.DeviceNode`.
        """
        _check_node(node, "invalidate_device_relations")
        await self.pnp.enumerate(node)

    @property
    def device_nodes(self) -> list[DeviceNode]:
        """Every device node present, in the order they were built."""
        return list(self.pnp.nodes)

    @property
    def drivers(self) -> dict[str, Driver]:
        """The loaded drivers, by the name they were loaded under."""
        return dict(self.pnp.drivers)

    @property
    def routine_failures(self) -> list[RoutineFailure]:
        """The routine failures of this run's PnP-hosted devices that had no ``on_error`` of their own.

        In the order they happened; each also went to :attr:`on_error` if one is set.  A device
        whose driver gave it an ``on_error`` keeps its failures in its own
        ``airp.device_tasks(device).failures``.  Emptied when the block is entered again.
        """
        return list(self.pnp.failures)

    def _forget_deleted(self) -> None:
        for name in [name for name, device in self._names.items() if device.deleted]:
            del self._names[name]

    # -- devices -----------------------------------------------------------------------------

    @overload
    def create_device(
        self,
        driver: Driver,
        name: str | None = None,
        *,
        device_type: int = DEFAULT_DEVICE_TYPE,
        flags: int = 0,
        initializing: bool = False,
    ) -> DeviceObject[Any]: ...

    @overload
    def create_device(
        self,
        driver: Driver,
        name: str | None = None,
        *,
        device_type: int = DEFAULT_DEVICE_TYPE,
        flags: int = 0,
        extension: _E,
        initializing: bool = False,
    ) -> DeviceObject[_E]: ...

    @overload
    def create_device(
        self,
        driver: Driver,
        name: str | None = None,
        *,
        device_type: int = DEFAULT_DEVICE_TYPE,
        flags: int = 0,
        make_extension: Callable[[DeviceObject[_E]], _E],
        initializing: bool = False,
    ) -> DeviceObject[_E]: ...

    def create_device(
        self,
        driver: Driver,
        name: str | None = None,
        *,
        device_type: int = DEFAULT_DEVICE_TYPE,
        flags: int = 0,
        extension: Any = None,
        make_extension: Callable[[DeviceObject[Any]], Any] | None = None,
        initializing: bool = False,
    ) -> DeviceObject[Any]:
        """``IoCreateDevice``: a new device served by *driver*, named *name* if given.

        The device's extension (the driver's per-device state) is typed: pass it as *extension*,
        or, when it needs the device itself (a :class:`~airp.StartIoQueue` per lane, say), pass
        *make_extension*, which is called once with the new device, before it is named, and whose
        result becomes ``device.extension``.  Either way the result is a ``DeviceObject[Ext]``,
        and dispatch routines declared ``device: DeviceObject[Ext]`` read the extension typed::

            device = io.create_device(LanesDriver(), "\\Device\\Lanes",
                                      make_extension=lambda d: Lanes(d))
            reveal_type(device)            # DeviceObject[Lanes]

        (Windows allocates ``DeviceExtensionSize`` bytes and the driver fills them right after
        IoCreateDevice returns; *make_extension* is that step.)  Without either the device is a
        ``DeviceObject[Any]`` whose ``extension`` is ``None`` until the driver sets it.

        Departure: Windows creates every device with ``DO_DEVICE_INITIALIZING`` set and the driver
        clears it at the end of AddDevice; airp leaves it clear unless *initializing* is True,
        since there is no AddDevice callback to clear it in.

        :param extension: the device extension.
        :param make_extension: ``(device) -> extension``, for an extension that refers to its device.
        :returns: the device, ``DeviceObject[type of the extension]``.
        :raises NtStatusError: STATUS_OBJECT_NAME_COLLISION if *name* is taken.
        :raises TypeError: if *driver* is not a :class:`~airp.Driver` or *name* not a str, if both
            *extension* and *make_extension* are given, or *make_extension* is not a plain function
            (a coroutine function would make a coroutine the extension).
        """
        if name is not None and (not isinstance(name, str) or not name):
            raise TypeError(f"a device name is a non-empty str or None, got {type(name).__name__} {name!r}")
        if name is not None and name in self._names and self._names[name].deleted:
            self._forget_deleted()
        if name is not None and name in self._names:
            raise NtStatusError(STATUS_OBJECT_NAME_COLLISION, f"a device named {name!r} already exists")
        if make_extension is not None:
            if extension is not None:
                raise TypeError("create_device takes extension= or make_extension=, not both")
            if not callable(make_extension):
                raise TypeError(f"make_extension is a callable (device) -> extension, got {make_extension!r}")
            check_plain_function("make_extension", make_extension, signature="(device) -> extension", optional=False)
        device: DeviceObject[Any] = DeviceObject(driver, name, device_type=device_type, flags=flags, extension=extension)
        if initializing:
            device.flags |= DeviceFlags.DEVICE_INITIALIZING
        if make_extension is not None:
            try:
                device.extension = make_extension(device)
            except BaseException:
                driver.devices.remove(device)
                raise
        if name is not None:
            self._names[name] = device
        return device

    def delete_device(self, device: DeviceObject) -> None:
        """``IoDeleteDevice``: remove *device* from the namespace and mark it deleted.

        :raises BugCheck: 0xC9 / 0x240 if deleted twice, 0x201 if still attached to a lower device.
        """
        delete_device(device)
        if device.name is not None and self._names.get(device.name) is device:
            del self._names[device.name]

    def get_device(self, name: str) -> DeviceObject:
        """The device named *name*.

        :raises NtStatusError: STATUS_OBJECT_NAME_NOT_FOUND if no device has that name; the
            message lists the names that exist.
        """
        device = self._names.get(name)
        if device is not None and not device.deleted:
            return device
        # A device its driver deleted (airp.delete_device, in IRP_MN_REMOVE_DEVICE) frees its name.
        self._forget_deleted()
        known = ", ".join(sorted(self._names)) or "none"
        raise NtStatusError(STATUS_OBJECT_NAME_NOT_FOUND, f"no device named {name!r} (known: {known})")

    @property
    def device_names(self) -> list[str]:
        """The names of all named devices (a deleted device's name is free)."""
        self._forget_deleted()
        return sorted(self._names)

    def new_traced_irp(self, stack_size: int) -> Irp:
        """A plain ``Irp(stack_size)`` that this manager's monitor traces: a *requester's* IRP.

        It is not ``IoAllocateIrp``: the IRP is not marked as driver-allocated, so the rules of
        reference 5.8 (the creator's completion routine must return
        STATUS_MORE_PROCESSING_REQUIRED, the creator frees it) do not apply, no lookaside list or
        low-resources simulation is involved, and it never fails.  Use it for an IRP that code
        outside any driver builds, sends and awaits itself (a test, a tool, the timeout pattern of
        reference 6.7 in ``examples/call_with_timeout.py``), when the trace should show it.

        The three ways to make an IRP (``docs/driver-created-irps.md``):

        - :func:`airp.allocate_irp` (``IoAllocateIrp``): **the** way for a driver to allocate an IRP
          of its own; 5.8's rules, allocators and the low-resources simulation apply;
        - ``io.new_traced_irp(n)``: a requester's plain IRP, traced by this manager;
        - ``airp.Irp(n)``: the bare object, untraced and unchecked, for tests of the machine itself.

        :param stack_size: number of stack locations (at least the target device's ``stack_size``).
        :returns: the new IRP, watched by :attr:`monitor` and :attr:`verifier` if there are.
        :raises ValueError: if *stack_size* is out of range (1 to 127).
        """
        irp = Irp(stack_size)
        if self._hooks is not None:
            self._hooks.watch(irp)
        if self.cancel_wait_limit is not None:
            irp.__dict__[_IRP_LIMIT] = self.cancel_wait_limit
        return irp

    def allocate_irp(self, stack_size: int) -> Irp:
        """Deprecated name of :meth:`new_traced_irp` (it is not ``IoAllocateIrp``).

        A driver that allocates an IRP of its own uses :func:`airp.allocate_irp`.

        :raises ValueError: if *stack_size* is out of range (1 to 127).
        """
        warnings.warn(
            "IoManager.allocate_irp is deprecated: it is not IoAllocateIrp. Use io.new_traced_irp(n) for a"
            " requester's traced plain IRP, or airp.allocate_irp(n) for a driver's own IRP (reference 5.8 rules)",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.new_traced_irp(stack_size)

    # -- handles -----------------------------------------------------------------------------

    def open(self, name: str, *, synchronous: bool = False) -> _Opening:
        """Open the device named *name*: sends IRP_MJ_CREATE to the top of its stack.

        Use it either way::

            async with io.open("\\\\Device\\\\Disk") as handle:   # opened here, closed at the end
                ...
            handle = await io.open("\\\\Device\\\\Disk")          # close it with handle.close()

        The first is the form airp's docs and examples use.  ``async with await io.open(...)`` is
        supported too (it awaits the open, then uses the :class:`FileHandle` as the context
        manager, which closes it the same way), but the ``await`` adds nothing.

        While the CREATE is on its way, the open holds the device node as a handle does: a
        surprise removal meanwhile sends IRP_MN_SURPRISE_REMOVAL, but IRP_MN_REMOVE_DEVICE waits
        until the open has ended (and then until its handle is closed), and an orderly removal is
        vetoed.  An open that fails leaves nothing behind: its file object is forgotten, and if
        it was the last thing holding a surprise-removed device, REMOVE_DEVICE goes before the
        error is raised.

        On cancellation: as awaiting any IRP; the CREATE request is cancelled and waited for, and
        no handle is returned.  If the driver completed the CREATE successfully all the same, the
        file it opened is closed (IRP_MJ_CLEANUP, IRP_MJ_CLOSE, shielded) before the cancellation
        propagates, as Windows closes a file object whose handle it cannot hand out.

        :raises NtStatusError: STATUS_OBJECT_NAME_NOT_FOUND for an unknown name, or the status the
            driver failed the CREATE with.
        """
        if not isinstance(name, str):
            raise TypeError(f"a device name is a str, got {type(name).__name__} {name!r}")
        return _Opening(self, name, synchronous)

    async def _open(self, name: str, synchronous: bool) -> FileHandle:
        device = self.get_device(name)
        node: DeviceNode | None = device.device_node
        if node is not None:
            _refuse_create(node)
        _register_in_run(self)
        file_object = FileObject(device, synchronous=synchronous)
        handle = FileHandle(self, file_object)
        request, top = handle._build_simple(IrpMajor.CREATE)
        if node is not None:
            # Counted before the CREATE goes down (Windows' open in progress holds a reference on
            # the device object): REMOVE after a surprise removal waits for it.  The check above
            # and this run with no await between them.
            self.pnp.open_begins(node)
        try:
            await self._send(request, top)
            await request
        except BaseException as error:
            await self._open_failed(handle, request, node, error)
            raise
        if node is not None:
            handle._node = node
            await self.pnp.open_ended(node, opened=True)
        return handle

    async def _open_failed(self, handle: FileHandle, request: Overlapped[Any], node: DeviceNode | None, error: BaseException) -> None:
        """Leave nothing behind of an open that raised *error*: the file object, the node's count.

        A CREATE that failed, or was cancelled and came back, sent nothing else and opened
        nothing: the file object is closed and forgotten (``_send`` put it in ``_files``).  One the
        driver completed successfully while the opener was cancelled (or a check after it raised)
        opened a file no handle will ever close: it is closed here, as Windows closes a file
        object whose handle it cannot hand out.  A CREATE still held by its driver past the
        cancel-wait limit (disowned, already reported) is forgotten once it completes.  Then the
        node's count is given back, which lets REMOVE go if this open was the last thing holding a
        surprise-removed node.

        What the clean-up raises does not replace *error*: it is chained to it
        (``follow_on``), unless *error* is a cancellation, which an error goes before.

        On cancellation: runs shielded to its end.
        """
        irp = request.irp
        file_object = handle.file_object
        try:
            with anyio.CancelScope(shield=True):
                if irp.completed and nt_success(irp.status):
                    if node is not None:
                        handle._node = node
                        await self.pnp.open_ended(node, opened=True)  # the close gives it back
                    await handle.close()
                    return
                file_object.closed = True
                if file_object.requests:
                    request.add_done_callback(lambda _request: self._forget_file(file_object))
                else:
                    self._files.pop(file_object, None)
                if node is not None:
                    await self.pnp.open_ended(node, opened=False)
        except Exception as raised:
            if isinstance(error, Exception):
                chain_follow_on(error, raised)
                return
            raise

    def _forget_file(self, file_object: FileObject) -> None:
        # A closed file object whose last request has reached its final stage is forgotten.
        if file_object.closed and not self.outstanding_requests(file_object):
            self._files.pop(file_object, None)

    async def _send(self, request: Overlapped[Any], top: DeviceObject, *, deadline: float | None = None) -> Overlapped[Any]:
        # The requester's boundary: below it, the requester's deadline turns into cancel_irp in
        # airp's waits instead of aborting dispatch routines (airp._shell._requester_cancel).
        # current_effective_deadline is anyio's, with the backend found once (_requester_cancel).
        if deadline is None:
            deadline = current_effective_deadline()
            if deadline == -math.inf:
                # Already cancelled: send nothing, leave nothing behind.
                await anyio.lowlevel.checkpoint_if_cancelled()
        irp = request.irp
        hooks = self._hooks
        if hooks is not None:
            hooks.watch(irp)
        if self.cancel_wait_limit is not None:
            irp.__dict__[_IRP_LIMIT] = self.cancel_wait_limit
        # The handle's list of requests (for cleanup, reference 6.5) and the issuing task's (the
        # thread's IrpList, 6.6); Overlapped's final stage takes the IRP off both.  Written out
        # here rather than through charge_to_current_task: two frames fewer per request.
        file_object = irp.file_object
        if file_object is not None:
            file_object.requests[irp] = None
            self._files[file_object] = None
        tio = _current_task_io.get()
        if tio is not None and not tio.closed:
            tio._charge(irp)
        if deadline == math.inf:
            status = await call_driver(top, irp)
        else:
            status = await call_driver_for_requester(top, irp, deadline)
        request.status_returned = status
        # check_returned_status has nothing to check for STATUS_PENDING on an IRP still in flight
        # (the final stage checks the mark later) or one completed with the mark propagated: skip
        # the call for that common answer.
        if status != STATUS_PENDING or (irp._index > irp.stack_count and not irp.pending_returned):
            check_returned_status(irp, status, top)
        return request

    def outstanding_requests(self, file_object: FileObject | None = None) -> list[Irp]:
        """Requests sent through this manager that have not completed yet, oldest first.

        :param file_object: only those of this file object (a handle's ``file_object``).
        :raises TypeError: if *file_object* is neither a FileObject nor ``None``.
        """
        if file_object is not None and not isinstance(file_object, FileObject):
            raise must_be("outstanding_requests(file_object): file_object", "a FileObject (a handle's file_object) or None", file_object)
        files = (file_object,) if file_object is not None else tuple(self._files)
        return [irp for fo in files for irp in fo.requests if not irp.completed]

    def _report_deadlock(self, findings: DeadlockFindings) -> None:
        # Asked by the run's virtual clock when the run deadlocks (see _register_in_run).
        for irp in self.outstanding_requests():
            findings.outstanding.append((irp, holding_device(irp)))
        for irp in self.pnp.in_flight:
            if not irp.completed:
                findings.outstanding.append((irp, holding_device(irp)))
        # The drivers' own IRPs: a pool knows the IRPs it has out, an allocator only how many.
        drivers = {id(d): d for d in self.pnp.drivers.values()}
        drivers.update((id(device.driver), device.driver) for device in self._names.values())
        for driver in drivers.values():
            pooled: dict[int, int] = {}
            for pool in list(getattr(driver, "_irp_pools", ())):
                out = pool.in_use
                findings.outstanding.extend((irp, holding_device(irp)) for irp in out if not irp.completed)
                if pool.allocator is not None:
                    pooled[id(pool.allocator)] = pooled.get(id(pool.allocator), 0) + len(out)
            for allocator in list(getattr(driver, "_irp_allocators", ())):
                count = allocator.statistics().outstanding - pooled.get(id(allocator), 0)
                if count > 0:
                    findings.waits.append(f"{driver!r} has {count} IRP(s) of its own out from {allocator!r}")

    async def _after_cleanup(self, file_object: FileObject, limit: float | None = None) -> int:
        # Reference 6.5 makes completing the handle's IRPs the driver's job in IRP_MJ_CLEANUP.
        # What it left is cancelled here (as CancelIoEx on the handle would) and waited for,
        # shielded and bounded; an IRP still held past the cancel-wait limit is disowned and
        # reported with DriverCancelTimeoutWarning.
        left = [irp for irp in self.outstanding_requests(file_object) if not is_disowned(irp)]
        return await cancel_and_wait(left, limit=limit, reason="handle closed")


def _refuse_create(node: DeviceNode) -> None:
    # Reference 8.2: creates fail while remove is pending; a device that is gone has nothing to
    # open.  Windows leaves the first to each driver; the I/O manager does it here for all of them.
    state = node.pdo.pnp_state
    if state is PnpState.STARTED:
        return
    if state is PnpState.REMOVE_PENDING:
        raise NtStatusError(STATUS_DELETE_PENDING, f"{node!r} is remove-pending: no new handles until the removal is cancelled")
    if state is PnpState.NOT_STARTED:
        raise NtStatusError(STATUS_DEVICE_NOT_READY, f"{node!r} has not been started (io.start_device)")
    raise NtStatusError(STATUS_NO_SUCH_DEVICE, f"{node!r} is {state.value if state else 'gone'}: it cannot be opened")


#: The I/O managers that opened a handle in the current run (weakly held), so that test support
#: (``airp.testing``'s deadlock report) can list the requests still outstanding without module
#: globals holding run state.
_RUN_MANAGERS: anyio.lowlevel.RunVar[weakref.WeakSet[IoManager]] = anyio.lowlevel.RunVar("airp_io_managers")


def _register_in_run(io: IoManager) -> None:
    try:
        managers = _RUN_MANAGERS.get()
    except LookupError:
        managers = weakref.WeakSet()
        _RUN_MANAGERS.set(managers)
    if io not in managers:
        managers.add(io)
        # The I/O manager installs its part of the deadlock report with the run's clock (a hook
        # per run, not per import): the clock asks it only if the run deadlocks.
        add_deadlock_reporter(io)


def run_io_managers() -> list[IoManager]:
    """The I/O managers that opened a handle in the current run (empty outside a run)."""
    try:
        return list(_RUN_MANAGERS.get())
    except Exception:  # no manager opened a handle in this run, or not inside a run
        return []


class _Opening:
    __slots__ = ("_handle", "_io", "_name", "_synchronous")

    def __init__(self, io: IoManager, name: str, synchronous: bool) -> None:
        self._io = io
        self._name = name
        self._synchronous = synchronous
        self._handle: FileHandle | None = None

    def __await__(self) -> Generator[Any, None, FileHandle]:
        return self._io._open(self._name, self._synchronous).__await__()

    async def __aenter__(self) -> FileHandle:
        self._handle = await self._io._open(self._name, self._synchronous)
        return self._handle

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._handle is not None:
            await self._handle.close()


class FileHandle:
    """An open handle to a device: the requester's calls.

    Each call builds an IRP for the top of the device's stack, sends it with
    :func:`~airp.call_driver` and waits for its completion.  Results come back as data; a final
    status that is not success raises :class:`~airp.NtStatusError` carrying the status.  Each call
    also has an ``*_overlapped`` form that returns as soon as the dispatch routine has returned,
    with an :class:`~airp.Overlapped` to await later.

    On cancellation (all calls): the IRP is cancelled, the call waits, shielded, until a driver
    has completed it, then the cancellation propagates.

    Use it as an async context manager to close it.
    """

    def __init__(self, io: IoManager, file_object: FileObject) -> None:
        self.io = io
        self.file_object = file_object
        self._closing = False
        # The PnP device node the handle counts against (REMOVE after a surprise removal waits
        # for the last one).
        self._node: DeviceNode | None = None

    @property
    def device(self) -> DeviceObject:
        """The device that was opened by name."""
        return self.file_object.device

    def _top(self) -> DeviceObject:
        if self.file_object.closed or self._closing:
            raise ValueError(f"{self.file_object!r} is closed")
        device = self.file_object.device
        top = get_attached_device(device)
        if device.deleted or top.deleted:
            # IoDeleteDevice with this handle still open: the device is delete-pending.  It will
            # still get this handle's CLEANUP and CLOSE, but no new I/O.
            raise NtStatusError(
                STATUS_DELETE_PENDING, f"{device!r} has been deleted; only closing {self.file_object!r} is left to do"
            )
        return top

    def _build_simple(self, major: IrpMajor) -> tuple[Overlapped[int], DeviceObject]:
        top = get_attached_device(self.file_object.device)
        irp = Irp(top.stack_size)
        irp.file_object = self.file_object
        loc = irp._stack[irp.stack_count - 1]
        loc.major = major
        loc.file_object = self.file_object
        return Overlapped(irp, None, count_result), top

    async def _simple(self, major: IrpMajor) -> None:
        request, top = self._build_simple(major)
        await self.io._send(request, top)
        await request

    async def _close_step(self, major: IrpMajor, deadline: float, limit: float) -> BaseException | None:
        # One of close's requests, inside close's shield: sent with the close's deadline, waited for
        # until then, and past it cancelled once and disowned, never waited for twice.  Returns
        # what a driver routine raised (a failed status is ignored, as Windows ignores it).
        request, top = self._build_simple(major)
        irp = request.irp
        with anyio.move_on_at(deadline):
            try:
                # Sent even when the budget is spent (Windows always sends them): the explicit
                # deadline skips the "already cancelled, send nothing" check of a requester.
                await self.io._send(request, top, deadline=deadline)
            except NtStatusError:
                return None
            except Exception as error:
                return error
            if not irp.completed:
                waiter = irp._waiter
                if waiter is None:
                    waiter = irp._waiter = new_waiter()
                await waiter.wait()  # type: ignore[attr-defined]
        if not irp.completed:
            try:
                cancel_irp(irp, reason="handle closed")
            except Exception as error:
                return error
            if not irp.completed:
                _disown(irp, limit)
        return irp._final_error

    async def read_overlapped(self, length: int, *, offset: int = 0) -> Overlapped[bytes]:
        """Send a read of *length* bytes at *offset*; return once the dispatch routine returned."""
        # _top's checks, with the call only when one of them fails, to raise its error.
        file_object = self.file_object
        device = file_object.device
        top = get_attached_device(device)
        if file_object.closed or self._closing or device.deleted or top.deleted:
            top = self._top()
        request = build_read_write_request(top, IrpMajor.READ, length=length, offset=offset, file_object=self.file_object)
        return await self.io._send(request, top)

    async def read(self, length: int, *, offset: int = 0) -> bytes:
        """Read up to *length* bytes at *offset*.

        :returns: the bytes the driver transferred (``information`` of them).
        :raises NtStatusError: if the final status is not success.
        """
        request = await self.read_overlapped(length, offset=offset)
        return await request

    async def write_overlapped(self, data: bytes | bytearray | memoryview, *, offset: int = 0) -> Overlapped[int]:
        """Send a write of *data* at *offset*; return once the dispatch routine returned."""
        top = self._top()
        request = build_read_write_request(top, IrpMajor.WRITE, data=data, offset=offset, file_object=self.file_object)
        return await self.io._send(request, top)

    async def write(self, data: bytes | bytearray | memoryview, *, offset: int = 0) -> int:
        """Write *data* at *offset*.

        :returns: the number of bytes the driver reports written.
        :raises NtStatusError: if the final status is not success.
        """
        request = await self.write_overlapped(data, offset=offset)
        return await request

    async def device_control_overlapped(
        self, code: int, input: bytes | bytearray | memoryview = b"", output_length: int = 0, *, internal: bool = False
    ) -> Overlapped[bytes]:
        """Send a device-control request; return once the dispatch routine returned."""
        top = self._top()
        request = build_device_control_request(top, code, input, output_length, internal=internal, file_object=self.file_object)
        return await self.io._send(request, top)

    async def device_control(
        self, code: int, input: bytes | bytearray | memoryview = b"", output_length: int = 0, *, internal: bool = False
    ) -> bytes:
        """``DeviceIoControl``: send control code *code* with *input*, expect up to *output_length* bytes.

        The transfer method (buffered, in/out direct, neither) is the low two bits of *code*.

        :returns: the output bytes (``information`` of them).
        :raises NtStatusError: if the final status is not success.
        """
        request = await self.device_control_overlapped(code, input, output_length, internal=internal)
        return await request

    async def close(self) -> None:
        """Close the handle: IRP_MJ_CLEANUP, then IRP_MJ_CLOSE.  Closing twice does nothing.

        New requests on the handle are refused (``ValueError``) from the moment the close starts.
        The driver's IRP_MJ_CLEANUP routine must complete every request of this handle it still
        holds, as cancelled (reference 6.5; ``IrpQueue.complete_all(file_object)`` does it for a
        cancel-safe queue).  Once CLEANUP has completed, any request of the handle still
        outstanding is cancelled with :func:`~airp.cancel_irp` (as ``CancelIoEx`` on the handle
        would) and waited for.  The whole close is bounded by one cancel-wait limit: a request
        (CLEANUP, CLOSE or a leftover) still held when it runs out is cancelled and disowned, and
        reported with :class:`~airp.DriverCancelTimeoutWarning`.  So when ``close`` returns,
        every request of the handle has completed, or has been reported.

        A driver that fails either request does not keep the handle open; its status is ignored,
        as Windows ignores it.  A CLEANUP or CLOSE routine that raises does not either: every step
        still runs, the handle is closed, and then the first exception propagates.  A handle whose
        device was deleted meanwhile (delete-pending) still sends its CLEANUP and CLOSE there.

        The last handle of a surprise-removed device lets IRP_MN_REMOVE_DEVICE go (reference 8.2):
        ``close`` sends it and returns once it has completed, after waiting for a PnP request
        still going down the device's stack (SURPRISE_REMOVAL, say), which REMOVE never overtakes.

        On cancellation: closing is not interruptible (``CloseHandle``): the whole close runs
        shielded, each of its waits bounded by the cancel-wait limit, and the cancellation is
        raised once the handle is closed.
        """
        if self.file_object.closed or self._closing:
            return
        self._closing = True
        file_object = self.file_object
        errors: list[BaseException] = []
        try:
            with anyio.CancelScope(shield=True):
                # One budget for the whole close: a CLEANUP that never completes costs one
                # cancel-wait limit, not one per step.
                limit = self.io.cancel_wait_limit
                if limit is None:
                    limit = get_cancel_wait_limit()
                deadline = anyio.current_time() + limit
                # Windows closes the handle whatever the driver answers, and whatever its routine
                # does: every step runs even if the one before it raised.
                error = await self._close_step(IrpMajor.CLEANUP, deadline, limit)
                if error is not None:
                    errors.append(error)
                try:
                    await self.io._after_cleanup(file_object, max(0.0, deadline - anyio.current_time()))
                except Exception as raised:
                    errors.append(raised)
                error = await self._close_step(IrpMajor.CLOSE, deadline, limit)
                if error is not None:
                    errors.append(error)
        finally:
            file_object.closed = True
            left = self.io.outstanding_requests(file_object)
            if not left:
                self.io._files.pop(file_object, None)
            else:
                # Requests disowned past the cancel-wait limit may still complete: the file object
                # is forgotten when the last of them does, not kept (with its stack) for good.
                io = self.io
                for irp in left:
                    request = getattr(irp._final_stage, "__self__", None)
                    if isinstance(request, Overlapped):
                        request.add_done_callback(lambda _request: io._forget_file(file_object))
            node, self._node = self._node, None
        if node is not None:
            # The last handle of a surprise-removed device lets IRP_MN_REMOVE_DEVICE go (8.2).
            with anyio.CancelScope(shield=True):
                try:
                    await self.io.pnp.handle_closed(node)
                except Exception as raised:
                    errors.append(raised)
        await anyio.lowlevel.checkpoint_if_cancelled()
        if errors:
            raise errors[0]

    async def __aenter__(self) -> FileHandle:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<FileHandle {self.file_object!r}>"
