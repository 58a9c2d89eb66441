"""The Plug and Play manager: device nodes, the stacks built on them, and their removal (reference 8).

A :class:`DeviceNode` is one physical device: its PDO (made by a bus driver, or by the root bus
for a device added with :meth:`airp.IoManager.add_device`), the filter and function devices the
drivers' ``add_device`` routines attached on top of it, and the nodes a bus driver reported as its
children.  :class:`PnpManager` sends the PnP IRPs of reference 8.2 down those stacks, keeps each
device's :class:`~airp.PnpState` by the table of :mod:`airp._machine._pnp`, runs the devices'
queues (``run_device``) from START_DEVICE to removal, and checks the lifecycle rules of 10.3.

The I/O manager owns one and forwards its public calls to it; see ``docs/lifecycle.md``.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.lowlevel

from .._machine._bugcheck import BugCheck, BugCheckCode, VerifierCode
from .._machine._codes import DeviceFlags, IrpMajor, PnpMinor
from .._machine._completion import complete_request
from .._machine._device import DeviceObject, delete_device, get_attached_device
from .._machine._driver import Driver, dispatch
from .._machine._errors import NtStatusError
from .._machine._irp import Irp
from .._machine._pnp import (
    DeviceRelationType,
    PnpState,
    QueryDeviceRelationsParameters,
    adding_device,
    next_pnp_state,
)
from .._machine._status import STATUS_NOT_SUPPORTED, STATUS_SUCCESS, NtStatus
from .._shell._call import call_driver
from .._shell._device_tasks import (
    DeviceRoutineError,
    DeviceState,
    RoutineFailure,
    _exit_unwrapped,
    _KeepFirst,
    run_device,
)
from .._shell._requester_cancel import cancel_and_wait, holding_device, is_disowned
from ._plugins import load_driver

if TYPE_CHECKING:
    from .._machine._allocation import IrpAllocator
    from ._manager import IoManager

__all__ = ["DeviceNode", "DriverSpec", "PnpManager", "RemovalVetoed", "RootBus", "StackDescription", "UnloadRefused"]

#: How a stack names a driver: a plugin name (``airp.drivers`` entry point, or a driver loaded
#: under that name with :meth:`airp.IoManager.load_driver`), a :class:`~airp.Driver` subclass, or
#: a driver object.
DriverSpec = str | type[Driver] | Driver


@dataclass(frozen=True, slots=True)
class StackDescription:
    """The drivers of one kind of device, bottom to top above its PDO (an INF's service entries).

    :ivar function: the function driver.
    :ivar lower_filters: filters between the PDO and the function device, bottom first.
    :ivar upper_filters: filters above the function device, bottom first.
    """

    function: DriverSpec
    lower_filters: tuple[DriverSpec, ...] = ()
    upper_filters: tuple[DriverSpec, ...] = ()

    def drivers(self) -> tuple[DriverSpec, ...]:
        """Every driver in AddDevice order: lower filters, the function driver, upper filters."""
        return (*self.lower_filters, self.function, *self.upper_filters)


class RemovalVetoed(Exception):  # noqa: N818 - "the removal was vetoed", as Windows says it
    """An orderly removal was refused: a driver failed IRP_MN_QUERY_REMOVE_DEVICE, or handles are open or opening.

    Nothing changed: every device of the stack is back in the state it was in (CANCEL_REMOVE_DEVICE
    was sent to the stack when a driver failed the query).

    :ivar node: the node whose removal was refused.
    :ivar reason: what refused it.
    :ivar status: the status a driver failed the query with, or ``None`` for open handles and opens
        in progress.
    """

    def __init__(self, node: DeviceNode, reason: str, status: NtStatus | None = None) -> None:
        self.node = node
        self.reason = reason
        self.status = status
        super().__init__(f"removal of {node!r} vetoed: {reason}")


class UnloadRefused(Exception):  # noqa: N818 - the refusal is the point
    """A driver cannot unload: it still has devices, or IRPs it allocated were never given back.

    :ivar driver: the driver.
    :ivar devices: its devices still present.
    :ivar irps: IRPs of its :class:`~airp.IrpPool` objects still out, with the pool's device.
    :ivar allocators: its :class:`~airp.IrpAllocator` objects (``IrpAllocator(owner=driver)``)
        with IRPs allocated and not freed, with how many each.
    """

    def __init__(
        self,
        driver: Driver,
        devices: Sequence[DeviceObject],
        irps: Sequence[tuple[Irp, DeviceObject]],
        allocators: Sequence[tuple[IrpAllocator, int]] = (),
    ) -> None:
        self.driver = driver
        self.devices = tuple(devices)
        self.irps = tuple(irps)
        self.allocators = tuple(allocators)
        parts = []
        if self.devices:
            parts.append("its devices still exist: " + ", ".join(repr(d) for d in self.devices) + " (remove them first)")
        if self.irps:
            parts.append(
                "IRPs of its pools were never given back: "
                + ", ".join(f"{irp!r} (pool of {device!r})" for irp, device in self.irps)
            )
        if self.allocators:
            parts.append(
                "IRPs it allocated were never freed: "
                + ", ".join(f"{count} from {allocator!r}" for allocator, count in self.allocators)
                + " (free_irp each)"
            )
        super().__init__(f"{driver!r} cannot unload: " + "; ".join(parts))


class RootBus(Driver):
    """The root bus: the driver of the PDOs of devices added with :meth:`airp.IoManager.add_device`.

    It succeeds the PnP requests a PDO must succeed (start, query-remove, cancel-remove, surprise
    removal, remove), completes the others with the status they carry, and deletes its PDO on
    IRP_MN_REMOVE_DEVICE: a root-enumerated device that is removed is gone.  Every other request
    that reaches it fails with STATUS_INVALID_DEVICE_REQUEST.
    """

    def __init__(self) -> None:
        super().__init__("root")

    @dispatch(IrpMajor.PNP)
    async def pnp(self, device: DeviceObject, irp: Irp) -> int:
        minor = irp.current_stack_location.minor
        if minor in _PDO_SUCCEEDS:
            if minor == PnpMinor.REMOVE_DEVICE:
                delete_device(device)
            complete_request(irp, STATUS_SUCCESS, 0)
            return STATUS_SUCCESS
        status = irp.status
        complete_request(irp, status, irp.information)
        return status


_PDO_SUCCEEDS = frozenset(
    (
        PnpMinor.START_DEVICE,
        PnpMinor.QUERY_REMOVE_DEVICE,
        PnpMinor.CANCEL_REMOVE_DEVICE,
        PnpMinor.SURPRISE_REMOVAL,
        PnpMinor.REMOVE_DEVICE,
    )
)


class DeviceNode:
    """A device node: one physical device, the stack its drivers built on its PDO, and its children.

    :ivar pdo: the physical device object, at the bottom of the stack.
    :ivar hardware_id: what the stack was chosen by.
    :ivar parent: the bus's node, or ``None`` for a device added with ``io.add_device``.
    :ivar children: the nodes of the devices the bus driver of this node reported.
    :ivar handles: how many handles are open on the stack.
    :ivar opening: how many opens are in progress on the stack: their IRP_MJ_CREATE has been sent
        and has not completed yet.  Each holds the device as an open handle does (Windows' open
        in progress holds a reference on the device object): REMOVE_DEVICE after a surprise
        removal waits for it, and an orderly removal is vetoed while one is in progress.
    """

    __slots__ = (
        "_busy",
        "_gone",
        "_hosts",
        "_last_stack",
        "children",
        "handles",
        "hardware_id",
        "opening",
        "parent",
        "pdo",
        "removed",
    )

    def __init__(self, pdo: DeviceObject, hardware_id: str, parent: DeviceNode | None) -> None:
        self.pdo = pdo
        self.hardware_id = hardware_id
        self.parent = parent
        self.children: list[DeviceNode] = []
        self.handles = 0
        self.opening = 0
        # The devices whose queues run in the PnP manager's task group: device -> (stop, done).
        self._hosts: dict[DeviceObject, tuple[anyio.Event, anyio.Event]] = {}
        self._gone: anyio.Event | None = None
        #: True once IRP_MN_REMOVE_DEVICE has completed on the stack.
        self.removed = False
        # The stack as it was when REMOVE went down (the drivers then detach from each other).
        self._last_stack: tuple[DeviceObject, ...] = ()
        # Held while one PnP request of the node goes down its stack (PnpManager._serialised).
        self._busy: anyio.Lock | None = None

    @property
    def state(self) -> PnpState:
        """The node's :class:`~airp.PnpState` (its PDO's)."""
        state = self.pdo.pnp_state
        assert state is not None
        return state

    @property
    def devices(self) -> tuple[DeviceObject, ...]:
        """The devices of the stack, bottom (the PDO) to top; once removed, the stack it had."""
        if self.removed:
            return self._last_stack
        found = [self.pdo]
        device = self.pdo.attached_device
        while device is not None:
            found.append(device)
            device = device.attached_device
        return tuple(found)

    @property
    def top(self) -> DeviceObject:
        """The top of the stack: where requests to the device go."""
        return get_attached_device(self.pdo)

    @property
    def name(self) -> str | None:
        """The PDO's name, which handles open the stack by."""
        return self.pdo.name

    async def wait_removed(self) -> None:
        """Wait until IRP_MN_REMOVE_DEVICE has been sent to the stack and completed.

        On cancellation: stops waiting; the removal is unaffected.
        """
        if self.removed:
            await anyio.lowlevel.checkpoint()
            return
        if self._gone is None:
            self._gone = anyio.Event()
        await self._gone.wait()

    def __repr__(self) -> str:
        label = self.pdo.name or self.hardware_id
        state = self.pdo.pnp_state.value if self.pdo.pnp_state is not None else "?"
        return f"<DeviceNode {label} {state}, {len(self.devices)} device(s)>"


def _holding(node: DeviceNode) -> str:
    """Why an orderly removal of *node* is vetoed: its open handles and opens in progress."""
    parts = []
    if node.handles:
        parts.append(f"{node.handles} handle(s) still open")
    if node.opening:
        parts.append(f"{node.opening} open(s) in progress")
    return " and ".join(parts)


def _open_handles(node: DeviceNode) -> int:
    # Opens in progress count: their CREATE is still going down the stack REMOVE would take apart.
    return node.handles + node.opening + sum(_open_handles(child) for child in node.children)


class PnpManager:
    """The PnP half of an :class:`~airp.IoManager` (reference 8.2); reach it through the I/O manager.

    :param io: the I/O manager it belongs to.
    """

    def __init__(self, io: IoManager) -> None:
        self.io = io
        self.drivers: dict[str, Driver] = {}
        self.stacks: dict[str, StackDescription] = {}
        self.nodes: list[DeviceNode] = []
        self.root = RootBus()
        self._tg: anyio.abc.TaskGroup | None = None
        #: PnP IRPs sent and not back yet, for the deadlock report.
        self.in_flight: dict[Irp, DeviceNode] = {}
        #: What the routines of hosted devices without an ``on_error`` of their own raised this run.
        self.failures: list[RoutineFailure] = []

    # -- drivers -----------------------------------------------------------------------------

    def load_driver(self, spec: DriverSpec, name: str | None = None, **params: Any) -> Driver:
        if isinstance(spec, Driver):
            if params:
                raise TypeError(f"load_driver got a driver object {spec!r} and parameters {sorted(params)}: pass a class or a plugin name to construct it with them")
            driver = spec
            key = name or driver.name
        else:
            if isinstance(spec, str):
                factory: Any = load_driver(spec)
                key = name or spec
            elif isinstance(spec, type) and issubclass(spec, Driver):
                factory = spec
                key = name or spec.__name__
            else:
                raise TypeError(
                    f"a driver is named by a plugin name, a Driver subclass or a Driver object, got {type(spec).__name__} {spec!r}"
                )
            driver = factory(**params)
            if not isinstance(driver, Driver):
                raise TypeError(f"driver plugin {spec!r} made {driver!r}, which is not an airp.Driver")
        existing = self.drivers.get(key)
        if existing is not None and existing is not driver:
            raise ValueError(f"a driver is already loaded as {key!r}: {existing!r} (unload it, or give another name=)")
        self.drivers[key] = driver
        return driver

    def _resolve(self, spec: DriverSpec) -> Driver:
        if isinstance(spec, Driver):
            for driver in self.drivers.values():
                if driver is spec:
                    return driver
            return self.load_driver(spec)
        if isinstance(spec, str):
            loaded = self.drivers.get(spec)
            return loaded if loaded is not None else self.load_driver(spec)
        if isinstance(spec, type) and issubclass(spec, Driver):
            for driver in self.drivers.values():
                if type(driver) is spec:
                    return driver
            return self.load_driver(spec)
        raise TypeError(f"a driver is named by a plugin name, a Driver subclass or a Driver object, got {type(spec).__name__} {spec!r}")

    async def unload_driver(self, driver: Driver | str) -> None:
        if isinstance(driver, str):
            try:
                driver = self.drivers[driver]
            except KeyError:
                known = ", ".join(sorted(self.drivers)) or "none"
                raise LookupError(f"no driver loaded as {driver!r} (loaded: {known})") from None
        devices = [device for device in driver.devices if not device.deleted]
        irps = [(irp, pool.device) for pool in list(driver._irp_pools) for irp in pool.in_use]
        # A pool's IRPs come from an allocator too: count only what the pools do not account for.
        pooled = {id(pool.allocator): len(pool.in_use) for pool in list(driver._irp_pools) if pool.allocator is not None}
        allocators = [
            (allocator, out)
            for allocator in list(driver._irp_allocators)
            if (out := allocator.statistics().outstanding - pooled.get(id(allocator), 0)) > 0
        ]
        if devices or irps or allocators:
            raise UnloadRefused(driver, devices, irps, allocators)
        unload = getattr(driver, "unload", None)
        if unload is not None:
            result = unload()
            if inspect.isawaitable(result):
                with anyio.CancelScope(shield=True):
                    await result
        for key in [key for key, loaded in self.drivers.items() if loaded is driver]:
            del self.drivers[key]
        await anyio.lowlevel.checkpoint_if_cancelled()

    # -- running -----------------------------------------------------------------------------

    async def __aenter__(self) -> PnpManager:
        if self._tg is not None:
            raise RuntimeError(f"{self.io!r} is already running")
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        self.failures = []
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        """Remove every node (:meth:`shutdown`), then end the task group the devices' queues ran in.

        A bug check (or any error) while removing does not stop the removal of the other nodes;
        every device's queues are stopped whatever happened, so the task group always ends.  Then
        the first error of the removal is raised; if the block raised too, that error is raised
        with the block's exception as its ``__context__`` (Python's rule for an error in a
        clean-up: both are shown, the block's first).  Otherwise the block's own exception goes
        through as it was raised, its cause and context untouched.

        Routines of hosted devices that raised during the run, with no ``on_error`` to hear of it
        (neither the device's nor the I/O manager's), are raised last, as one
        :class:`~airp.DeviceRoutineError`, if nothing else is: as ``run_device``'s own block
        does, and only when the block itself ended without an exception.  Under a removal's
        error it is that error's ``__context__``.
        """
        tg = self._tg
        assert tg is not None
        teardown_error: BaseException | None = None
        try:
            with anyio.CancelScope(shield=True):
                try:
                    await self.shutdown()
                finally:
                    # A node a bug check left half-way still has its queues running: stop them,
                    # or the task group below would wait for them for ever.
                    for node in list(self.nodes):
                        if node._hosts:
                            await self._stop_hosting(node)
        except BaseException as error:
            teardown_error = error
        finally:
            self._tg = None
        unreported: DeviceRoutineError | None = None
        if self.failures and self.io.on_error is None and exc is None:
            unreported = DeviceRoutineError(tuple(self.failures))
            unreported.__cause__ = self.failures[0].error
        try:
            # The hosts never raise ordinary exceptions: the block's own goes through unwrapped.
            result = await _exit_unwrapped(tg, exc_type, exc, tb)
        except BaseException as raised:
            if teardown_error is None or raised is not exc:
                raise
            result = False
        if teardown_error is not None:
            if unreported is not None and teardown_error.__context__ is None:
                teardown_error.__context__ = unreported
            raise teardown_error
        if unreported is not None:
            raise unreported
        return result

    def _running(self, what: str) -> anyio.abc.TaskGroup:
        if self._tg is None:
            raise RuntimeError(
                f"{what} needs the I/O manager running: do it inside `async with io:`, where the devices' queues run"
            )
        return self._tg

    async def shutdown(self) -> None:
        """Remove every node still present, children first: in order where no handle or driver
        objects, else as a surprise removal followed at once by REMOVE (the run is ending, so no
        handle can be waited for).

        A node whose removal raises (a bug check in REMOVE_DEVICE, say) does not stop the others:
        every node is dealt with, then the first exception is raised.
        """
        keep = _KeepFirst()
        for node in [node for node in self.nodes if node.parent is None]:
            if not node.removed:
                with keep:
                    await self._shutdown_tree(node)
        keep.raise_first()

    async def _shutdown_tree(self, node: DeviceNode) -> None:
        keep = _KeepFirst()
        for child in list(node.children):
            if not child.removed:
                with keep:
                    await self._shutdown_tree(child)
        if node.removed or node.pdo.pnp_state is PnpState.REMOVED:
            keep.raise_first()
            return
        # Each step is tried even if the one before raised: a failed query or surprise removal
        # still ends in REMOVE where the states allow it.
        if node.state is PnpState.STARTED:
            with keep:
                try:
                    await self.query_remove(node)
                except RemovalVetoed:
                    await self._surprise_tree(node)
        if node.state is PnpState.STARTED:
            with keep:
                await self._surprise_tree(node)
        if not node.removed:
            with keep:
                await self._send_remove(node)
        keep.raise_first()

    # -- building stacks ---------------------------------------------------------------------

    def register_stack(self, hardware_id: str, description: StackDescription) -> None:
        if not isinstance(hardware_id, str) or not hardware_id:
            raise TypeError(f"a hardware id is a non-empty str, got {hardware_id!r}")
        self.stacks[hardware_id] = description

    async def add_device(self, hardware_id: str, description: StackDescription | None, name: str | None) -> DeviceNode:
        self._running("add_device")
        if description is None:
            description = self._description_for(hardware_id)
        pdo = self.io.create_device(self.root, name)
        return await self._build(pdo, hardware_id, description, None)

    def _description_for(self, hardware_id: str) -> StackDescription:
        try:
            return self.stacks[hardware_id]
        except KeyError:
            known = ", ".join(sorted(self.stacks)) or "none registered"
            raise LookupError(
                f"no stack is registered for hardware id {hardware_id!r} (registered: {known}); use io.register_stack"
            ) from None

    async def _build(self, pdo: DeviceObject, hardware_id: str, description: StackDescription, parent: DeviceNode | None) -> DeviceNode:
        drivers = [self._resolve(spec) for spec in description.drivers()]
        for driver in drivers:
            if not callable(getattr(driver, "add_device", None)):
                raise TypeError(f"{driver!r} has no add_device(pdo) routine (AddDevice): it cannot be part of a PnP stack")
        node = DeviceNode(pdo, hardware_id, parent)
        pdo.pnp_state = PnpState.NOT_STARTED
        pdo.device_node = node
        pdo.flags &= ~DeviceFlags.DEVICE_INITIALIZING
        if pdo.name is not None and pdo.name not in self.io._names:
            self.io._names[pdo.name] = pdo
        self.nodes.append(node)
        if parent is not None:
            parent.children.append(node)
        # A failed AddDevice (or a bug check) leaves the node as far as it got, every device of it
        # in the node's state, so that removing it (io.remove_device, or the block's end) can work.
        try:
            for driver in drivers:
                before = set(map(id, driver.devices))
                token = adding_device.set(True)
                try:
                    result = driver.add_device(pdo)  # type: ignore[attr-defined]
                    if inspect.isawaitable(result):
                        await result
                finally:
                    adding_device.reset(token)
                for device in driver.devices:
                    if id(device) in before:
                        continue
                    if device.flags & DeviceFlags.DEVICE_INITIALIZING:
                        raise BugCheck(
                            BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION,
                            f"{driver!r} left DO_DEVICE_INITIALIZING set on {device!r} when its add_device returned:"
                            " clear it (device.flags &= ~DeviceFlags.DEVICE_INITIALIZING) once the device is ready",
                            parameters=(VerifierCode.DEVICE_INITIALIZING_NOT_CLEARED, device, 0, 0),
                            device=device,
                            driver=driver,
                        )
        finally:
            for device in node.devices:
                device.pnp_state = PnpState.NOT_STARTED
                device.device_node = node
        return node

    # -- sending PnP IRPs --------------------------------------------------------------------

    async def _send(self, node: DeviceNode, minor: PnpMinor, parameters: object = None) -> NtStatus:
        top = node.top
        irp = self.io.new_traced_irp(top.stack_size)
        loc = irp._stack[irp.stack_count - 1]
        loc.major = IrpMajor.PNP
        loc.minor = minor
        if parameters is not None:
            loc.parameters = parameters
        # Reference 8.2: every PnP IRP starts as STATUS_NOT_SUPPORTED, so that a stack where no
        # driver handles it answers that.
        irp.status = STATUS_NOT_SUPPORTED
        self.in_flight[irp] = node
        try:
            with anyio.CancelScope(shield=True):
                await call_driver(top, irp)
                status, _ = await irp
        finally:
            del self.in_flight[irp]
        return status

    def _apply(self, node: DeviceNode, minor: PnpMinor) -> None:
        for device in node.devices:
            state = device.pnp_state
            if state is None:
                # A device attached to the stack by hand after it was built.
                state = node.pdo.pnp_state
                assert state is not None
            device.pnp_state = next_pnp_state(state, minor)
            device.device_node = node

    @asynccontextmanager
    async def _serialised(self, node: DeviceNode) -> AsyncIterator[None]:
        """Hold *node*'s turn: one PnP request at a time goes down a node's stack.

        The PnP manager serialises the requests of a device node: REMOVE_DEVICE follows
        SURPRISE_REMOVAL, it never overtakes it.  Without this, the last handle closed while
        SURPRISE_REMOVAL is still on its way down (a driver awaiting in its routine) would send
        REMOVE_DEVICE at once; the drivers would detach and delete, and SURPRISE_REMOVAL would
        then reach deleted devices.  Each step (a state check, the state change, the queues
        stopped, the request sent and waited for) runs inside its node's turn, and checks the
        node again once it has it: whoever waited may find the work done (REMOVE already sent).
        A step holds its own node's turn only, except an enumeration (:meth:`enumerate`), which
        holds its bus's turn while it waits for its children's; nothing waits for a parent's turn
        while holding a child's, so no two steps can wait for each other.

        On cancellation: the turn is waited for shielded, as the requests themselves are.
        """
        lock = node._busy
        if lock is None:
            # fast_acquire: a free turn is taken without a checkpoint, so a PnP call that waits
            # for nobody runs exactly as it did before it had to take turns.
            lock = node._busy = anyio.Lock(fast_acquire=True)
        with anyio.CancelScope(shield=True):
            await lock.acquire()
        try:
            yield
        finally:
            lock.release()

    async def start_device(self, node: DeviceNode) -> None:
        tg = self._running("start_device")
        next_pnp_state(node.state, PnpMinor.START_DEVICE)  # refuse before sending anything
        async with self._serialised(node):
            next_pnp_state(node.state, PnpMinor.START_DEVICE)  # the request before may have moved it
            status = await self._send(node, PnpMinor.START_DEVICE)
            if status == STATUS_SUCCESS:
                self._apply(node, PnpMinor.START_DEVICE)
                for device in node.devices:
                    if device.tasks is not None and device.tasks.state is DeviceState.CREATED:
                        stop, done = anyio.Event(), anyio.Event()
                        node._hosts[device] = (stop, done)
                        await tg.start(self._host, device, stop, done)
        if status != STATUS_SUCCESS:
            # Windows removes a stack whose start failed.
            await self._send_remove(node)
            raise NtStatusError(status, f"IRP_MN_START_DEVICE failed for {node!r}; its stack was removed")
        await self.enumerate(node)

    async def _host(self, device: DeviceObject, stop: anyio.Event, done: anyio.Event, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        # The device's on_error and grace are kept if its driver set them (in add_device, on
        # airp.device_tasks(device)); without an on_error, failures go to the I/O manager's
        # (_routine_failed), never out of this task, whose failure would end the whole block.
        tasks = device.tasks
        on_error = tasks.on_error if tasks.on_error is not None else self._routine_failed
        try:
            async with run_device(device, on_error=on_error, grace=tasks.grace):
                task_status.started()
                await stop.wait()
        finally:
            done.set()

    def _routine_failed(self, failure: RoutineFailure) -> None:
        """A routine of a hosted device raised (its IRP already completed): tell whoever listens.

        The failure belongs to its device: the device goes on (its queue with its next IRP), and
        so do the others.  It is kept (:attr:`airp.IoManager.routine_failures`) and handed to the
        I/O manager's ``on_error``; without one it is raised at the end of the block.
        """
        self.failures.append(failure)
        on_error = self.io.on_error
        if on_error is not None:
            on_error(failure)

    async def _stop_hosting(self, node: DeviceNode) -> None:
        # The queue duties of SURPRISE_REMOVAL and REMOVE_DEVICE (8.2), done for the driver as KMDF
        # does: the queues stop accepting, queued IRPs complete with STATUS_NO_SUCH_DEVICE, IRPs in
        # progress are cancelled and finished by their routines.
        # A completion routine that raises while a queue is emptied does not keep the other
        # queues running: every host is told to stop and waited for, then the first is raised.
        hosts = list(node._hosts.items())
        keep = _KeepFirst()
        for device, (stop, _done) in reversed(hosts):
            tasks = device.tasks
            if tasks is not None and tasks.state is DeviceState.RUNNING:
                with keep:
                    tasks.remove()
            stop.set()
        with anyio.CancelScope(shield=True):
            for _device, (_stop, done) in hosts:
                await done.wait()
        node._hosts.clear()
        keep.raise_first()

    def _forget_gone(self) -> None:
        # A removed node whose PDO has been deleted (by its own REMOVE, or by its bus's) is gone.
        for gone in [n for n in self.nodes if n.removed and n.pdo.deleted]:
            self.nodes.remove(gone)
            if gone.parent is not None and gone in gone.parent.children:
                gone.parent.children.remove(gone)

    async def enumerate(self, node: DeviceNode) -> None:
        """IRP_MN_QUERY_DEVICE_RELATIONS (BusRelations): build new children, remove missing ones.

        One enumeration of a node at a time, all of it inside the node's turn (:meth:`_serialised`):
        the query, the surprise removal of the children no longer reported, and the building and
        starting of the new ones, as Windows' PnP manager enumerates a device node once at a time.
        An enumeration asked for meanwhile waits for it, then asks the bus again, and finds the
        children the first one built already there.  Without this, two enumerations at once each
        built the stack of a child reported to both (two device nodes on one PDO).

        The turn of the node is held while its children's turns are waited for (their surprise
        removal, their start), never the other way round: nothing waits for a parent's turn while
        holding a child's, so the two cannot wait for each other.  A driver routine that the
        enumeration runs (a child's AddDevice or start) must therefore not wait for an enumeration
        of that same bus.

        On cancellation: the turn and every PnP request are waited for shielded; the AddDevice
        routines run as they are (see :meth:`airp.IoManager.add_device`).
        """
        if node.state is not PnpState.STARTED:
            return
        async with self._serialised(node):
            if node.state is not PnpState.STARTED:
                return  # removed while this enumeration waited for the one before
            relations: list[object] = []
            status = await self._send(
                node, PnpMinor.QUERY_DEVICE_RELATIONS, QueryDeviceRelationsParameters(DeviceRelationType.BUS_RELATIONS, relations)
            )
            if status != STATUS_SUCCESS:
                return  # not a bus (STATUS_NOT_SUPPORTED), or nothing to say
            reported: list[DeviceObject] = []
            for child in relations:
                if not isinstance(child, DeviceObject):
                    raise TypeError(f"{node.top.driver!r} reported {child!r} as a bus relation: a bus reports its child PDOs (DeviceObject)")
                reported.append(child)
            known = {child.pdo: child for child in node.children}
            for child_node in list(node.children):
                if child_node.pdo not in reported and child_node.pdo.pnp_state is not PnpState.REMOVED:
                    await self._surprise_tree(child_node)
            for pdo in reported:
                previous = known.get(pdo)
                if previous is not None:
                    if not previous.removed:
                        continue
                    # Removed in order while still present: the PnP manager builds its stack again,
                    # as Windows restarts a device that is still there when its bus is enumerated.
                    if previous in self.nodes:
                        self.nodes.remove(previous)
                    if previous in node.children:
                        node.children.remove(previous)
                hardware_id = getattr(pdo.extension, "hardware_id", None)
                if not isinstance(hardware_id, str):
                    raise TypeError(f"child PDO {pdo!r} of {node!r} has no hardware id: its extension needs a str hardware_id")
                child = await self._build(pdo, hardware_id, self._description_for(hardware_id), node)
                await self.start_device(child)

    async def query_remove(self, node: DeviceNode) -> None:
        self._running("query_remove_device")
        next_pnp_state(node.state, PnpMinor.QUERY_REMOVE_DEVICE)  # refuse before asking anyone
        for child in node.children:
            if child.pdo.pnp_state is not PnpState.REMOVED:
                await self.query_remove(child)
        async with self._serialised(node):
            next_pnp_state(node.state, PnpMinor.QUERY_REMOVE_DEVICE)  # the request before may have moved it
            if node.handles or node.opening:
                raise RemovalVetoed(node, _holding(node))
            self._apply(node, PnpMinor.QUERY_REMOVE_DEVICE)
            status = await self._send(node, PnpMinor.QUERY_REMOVE_DEVICE)
        if status != STATUS_SUCCESS:
            await self.cancel_remove(node)
            raise RemovalVetoed(node, f"a driver failed IRP_MN_QUERY_REMOVE_DEVICE with {NtStatus(status).name}", NtStatus(status))

    async def cancel_remove(self, node: DeviceNode) -> None:
        async with self._serialised(node):
            self._apply(node, PnpMinor.CANCEL_REMOVE_DEVICE)
            await self._send(node, PnpMinor.CANCEL_REMOVE_DEVICE)
        for child in node.children:
            if child.pdo.pnp_state is PnpState.REMOVE_PENDING:
                await self.cancel_remove(child)

    async def remove_device(self, node: DeviceNode) -> None:
        self._running("remove_device")
        state = node.state
        if state is PnpState.REMOVED:
            raise ValueError(f"{node!r} has already been removed")
        if state is PnpState.SURPRISE_REMOVED:
            await node.wait_removed()
            return
        if state is PnpState.STARTED:
            await self.query_remove(node)
        await self._send_remove(node)


    async def surprise_remove(self, node: DeviceNode) -> None:
        self._running("surprise_remove")
        await self._surprise_tree(node)

    async def _surprise_tree(self, node: DeviceNode) -> None:
        # Children first; one that raises (a bug check in its SURPRISE_REMOVAL) does not keep the
        # others, or this node, from being told: the first exception is raised at the end.
        keep = _KeepFirst()
        for child in list(node.children):
            if child.pdo.pnp_state not in (PnpState.REMOVED, PnpState.SURPRISE_REMOVED):
                with keep:
                    await self._surprise_tree(child)
        with keep:
            await self._surprise_node(node)
        keep.raise_first()

    async def _surprise_node(self, node: DeviceNode) -> None:
        async with self._serialised(node):
            if node.state in (PnpState.REMOVED, PnpState.SURPRISE_REMOVED):
                return
            self._apply(node, PnpMinor.SURPRISE_REMOVAL)
            await self._stop_hosting(node)
            await self._send(node, PnpMinor.SURPRISE_REMOVAL)
        await self._remove_if_closed(node)

    async def _remove_if_closed(self, node: DeviceNode | None) -> None:
        # REMOVE follows a surprise removal once no handle is open on the node or below it; then
        # the bus above may be waiting for this node alone.
        while node is not None and not node.removed and node.state is PnpState.SURPRISE_REMOVED:
            if _open_handles(node):
                return
            await self._send_remove(node)
            node = node.parent

    async def handle_closed(self, node: DeviceNode) -> None:
        """The I/O manager's call when a handle on *node* is closed: the last one lets REMOVE go."""
        node.handles -= 1
        await self._remove_if_closed(node)

    def open_begins(self, node: DeviceNode) -> None:
        """The I/O manager's call before it sends an open's IRP_MJ_CREATE down *node*'s stack.

        From here until :meth:`open_ended` the open holds the node as a handle does: a surprise
        removal meanwhile sends SURPRISE_REMOVAL but not REMOVE_DEVICE, which would detach and
        delete the devices the CREATE is still going through.
        """
        node.opening += 1

    async def open_ended(self, node: DeviceNode, opened: bool) -> None:
        """The I/O manager's call once an open's IRP_MJ_CREATE is over (:meth:`open_begins`).

        :param opened: True if the CREATE succeeded and a handle now counts on the node (its close
            calls :meth:`handle_closed`); False if it failed, was cancelled or was given up: then,
            if that was the last thing holding a surprise-removed node, REMOVE_DEVICE goes now, as
            at the last handle's close.

        On cancellation: the removal it sends is waited for, shielded (PnP requests are).
        """
        node.opening -= 1
        if opened:
            node.handles += 1
            return
        with anyio.CancelScope(shield=True):
            await self._remove_if_closed(node)

    async def _send_remove(self, node: DeviceNode) -> None:
        # Children first; one whose REMOVE raises (a bug check) does not keep the others, or this
        # node, from being removed: the first exception is raised once all of them have been.
        keep = _KeepFirst()
        for child in list(node.children):
            if not child.removed:
                with keep:
                    await self._send_remove(child)
        with keep:
            async with self._serialised(node):
                # Whoever had the turn before (the last handle's close, the block's end) may
                # have removed the node already.
                if not node.removed:
                    await self._remove_node(node)
        keep.raise_first()

    async def _remove_node(self, node: DeviceNode) -> None:
        devices = node._last_stack = node.devices
        top = devices[-1]  # after REMOVE the node's top is whatever is left attached
        self._apply(node, PnpMinor.REMOVE_DEVICE)
        await self._stop_hosting(node)
        # Once REMOVE has gone down the node is removed, whatever the checks find or a driver
        # raises: the bug check reaches the caller, and nothing sends REMOVE to the node again.
        try:
            status = await self._send(node, PnpMinor.REMOVE_DEVICE)
            if status != STATUS_SUCCESS:
                raise BugCheck(
                    BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION,
                    f"IRP_MN_REMOVE_DEVICE completed with {NtStatus(status).name} on {node!r}: REMOVE must not fail"
                    f" (the status came back to the top of the stack, {top!r}; the driver that failed it is"
                    " that one or one below it)",
                    parameters=(VerifierCode.REMOVE_DEVICE_FAILED, top, status, 0),
                    device=top,
                    driver=top.driver,
                )
            for device in devices[1:]:
                if device.lower_device is not None:
                    raise BugCheck(
                        BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION,
                        f"{device.driver!r} did not detach {device!r} from {device.lower_device!r} in IRP_MN_REMOVE_DEVICE",
                        parameters=(VerifierCode.REMOVE_WITHOUT_DETACH, device, device.lower_device, 0),
                        device=device,
                        driver=device.driver,
                    )
                if not device.deleted:
                    raise BugCheck(
                        BugCheckCode.DRIVER_VERIFIER_IOMANAGER_VIOLATION,
                        f"{device.driver!r} did not delete {device!r} in IRP_MN_REMOVE_DEVICE",
                        parameters=(VerifierCode.REMOVE_WITHOUT_DELETE, device, 0, 0),
                        device=device,
                        driver=device.driver,
                    )
        finally:
            # Requests a driver of the stack still holds outside airp's queues (its own list, a timer)
            # should have been failed in SURPRISE_REMOVAL or REMOVE_DEVICE.  Nothing is left behind:
            # they are cancelled and waited for, bounded by the cancel-wait limit, past which they are
            # disowned and reported with DriverCancelTimeoutWarning naming the device.
            held = [irp for irp in self.io.outstanding_requests() if holding_device(irp) in devices and not is_disowned(irp)]
            if held:
                await cancel_and_wait(held, reason="device removed")
            self.io._forget_deleted()
            node.removed = True
            self._forget_gone()
            if node._gone is not None:
                node._gone.set()

