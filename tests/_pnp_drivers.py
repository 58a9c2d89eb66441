"""Small Plug and Play drivers for tests/test_pnp.py and tests/test_pnp_state_machine.py.

* :class:`Function`: a function driver.  READ and WRITE go to a :class:`airp.StartIoQueue` lane,
  DEVICE_CONTROL to a KMDF :class:`airp.IoQueue`; a :class:`airp.RemoveLock` is held around the
  hand-off in dispatch and again while the lane's routine or the queue's handler works (the
  pattern of docs/lifecycle.md section 5).  Its PnP routine does what section 3 says, unless one
  of its :data:`BUGS` is switched on.
* :class:`Filter`: a filter (lower or upper).  It passes I/O down with a completion routine that
  counts completions per IRP, and handles PnP as a filter must.
* :class:`Bus`: a bus driver.  Its FDO reports the child PDOs it was told about
  (:meth:`Bus.plug` / :meth:`Bus.unplug`); it serves those PDOs too, as a bus driver does.
* :class:`Plain`: a driver with an ``add_device`` and nothing else: airp's default dispatch.

Every driver writes what it saw into a shared :class:`Log`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio

import airp
from airp import (
    STATUS_CANCELLED,
    STATUS_CONTINUE_COMPLETION,
    STATUS_NO_SUCH_DEVICE,
    STATUS_SUCCESS,
    STATUS_UNSUCCESSFUL,
    DeviceFlags,
    DeviceObject,
    Irp,
    IrpMajor,
    NtStatus,
    PnpMinor,
    PnpState,
    complete_request,
)

#: What a :class:`Function` driver can be made to get wrong.
BUGS = frozenset(
    (
        "fail_start",  # completes START_DEVICE with STATUS_UNSUCCESSFUL
        "veto_query",  # fails QUERY_REMOVE_DEVICE with STATUS_UNSUCCESSFUL
        "no_detach",  # REMOVE: neither detaches nor deletes (0x21D comes first)
        "no_delete",  # REMOVE: detaches but never deletes (0x21E)
        "fail_remove",  # REMOVE: completes it with STATUS_UNSUCCESSFUL after detaching and deleting (0x306)
        "detach_in_surprise",  # SURPRISE_REMOVAL: detaches (0x241)
        "delete_in_surprise",  # SURPRISE_REMOVAL: deletes (0x242)
        "delete_twice",  # REMOVE: deletes its device twice (0x240)
        "delete_attached",  # REMOVE: deletes before detaching (0x201)
        "leave_initializing",  # add_device leaves DO_DEVICE_INITIALIZING set (0x243)
    )
)

#: The minors PNP_TRANSITIONS knows: the others (QUERY_DEVICE_RELATIONS, ...) move no state.
STATE_MINORS = frozenset(minor for (_state, minor) in airp.PNP_TRANSITIONS)


@dataclass
class Arrival:
    """One PnP IRP reaching one device."""

    driver: str
    device: DeviceObject
    minor: PnpMinor
    status: int  # irp.status on arrival
    state: PnpState | None  # device.pnp_state on arrival


@dataclass
class Log:
    """What the drivers of a test saw."""

    arrivals: list[Arrival] = field(default_factory=list)
    #: The drivers, in the order their START_DEVICE post-processing ran (after forward_and_wait).
    start_post: list[str] = field(default_factory=list)
    #: The drivers, in the order their add_device ran.
    add_order: list[str] = field(default_factory=list)
    #: Completions per IRP, counted by the filters' completion routines.
    completions: dict[Irp, int] = field(default_factory=dict)
    #: Every IRP a filter forwarded with its completion routine.
    forwarded: list[Irp] = field(default_factory=list)
    #: The drivers' unload() calls.
    unloaded: list[str] = field(default_factory=list)

    def arrive(self, driver: airp.Driver, device: DeviceObject, irp: Irp) -> PnpMinor:
        minor = PnpMinor(irp.current_stack_location.minor)
        self.arrivals.append(Arrival(driver.name, device, minor, int(irp.status), device.pnp_state))
        return minor

    def minors(self, driver: str) -> list[PnpMinor]:
        """The PnP minors *driver* saw, in order."""
        return [a.minor for a in self.arrivals if a.driver == driver]

    def transition_errors(self) -> list[str]:
        """Each device's states on arrival, checked step by step against PNP_TRANSITIONS.

        Only devices whose every state-changing PnP IRP was logged can be followed: a failed start
        (the stack is removed, the state stays NOT_STARTED) is not a path this follows.
        """
        errors: list[str] = []
        states: dict[int, PnpState] = {}
        for arrival in self.arrivals:
            if arrival.minor not in STATE_MINORS:
                continue
            before = states.get(id(arrival.device), PnpState.NOT_STARTED)
            expected = airp.PNP_TRANSITIONS.get((before, arrival.minor))
            # The PnP manager moves a device to its new state before it sends the IRP, except for
            # START_DEVICE: a device is STARTED only once its start has succeeded.
            arrives_in = before if arrival.minor == PnpMinor.START_DEVICE else expected
            if expected is None or arrival.state is not arrives_in:
                errors.append(
                    f"{arrival.device!r}: {arrival.minor.name} in {before.name} arrived with state"
                    f" {arrival.state} (table: {expected})"
                )
            if expected is not None:
                states[id(arrival.device)] = expected
        return errors


def _complete(irp: Irp, status: int, information: int = 0) -> int:
    complete_request(irp, status, information)
    return status


def _pass_down_success(device: DeviceObject, irp: Irp) -> Any:
    # The driver's part of a PnP request it agrees with: set success, pass it down untouched.
    irp.status = NtStatus(STATUS_SUCCESS)
    return airp.pass_down(device, irp)


class _Ext:
    """A :class:`Function` device's extension."""

    def __init__(self, device: DeviceObject, driver: Function) -> None:
        self.lock = airp.RemoveLock(f"{driver.name} lock")
        self.lane = airp.StartIoQueue(device, "io", driver.start_io)
        self.ctl = airp.IoQueue(device, driver.on_ioctl, name="ioctl")
        self.gone = False
        self.pool: airp.IrpPool | None = None


class Function(airp.Driver):
    """A function driver with a remove lock, a StartIo lane (READ/WRITE) and an IoQueue (IOCTL).

    :param log: where it writes what it saw.
    :param name: its name.
    :param latency: the device time a READ, WRITE or IOCTL takes in its routine.
    :param bugs: which of :data:`BUGS` it has.
    :param pool: make an :class:`airp.IrpPool` on its device in add_device.
    """

    def __init__(
        self,
        log: Log,
        name: str = "function",
        *,
        latency: float = 1.0,
        bugs: frozenset[str] | set[str] = frozenset(),
        pool: bool = False,
    ) -> None:
        super().__init__(name)
        unknown = set(bugs) - BUGS
        assert not unknown, unknown
        self.log = log
        self.latency = latency
        self.bugs = frozenset(bugs)
        self.make_pool = pool
        #: Every remove lock this driver made, for the end-of-test checks.
        self.locks: list[airp.RemoveLock] = []
        self.pools: list[airp.IrpPool] = []
        self.started_io = 0

    def unload(self) -> None:
        self.log.unloaded.append(self.name)

    def add_device(self, pdo: DeviceObject) -> None:
        self.log.add_order.append(self.name)
        device: DeviceObject[Any] = DeviceObject(self, flags=DeviceFlags.BUFFERED_IO)
        device.extension = _Ext(device, self)
        self.locks.append(device.extension.lock)
        airp.attach_device(device, pdo)
        if self.make_pool:
            device.extension.pool = airp.IrpPool(device)
            self.pools.append(device.extension.pool)
        if "leave_initializing" not in self.bugs:
            device.flags &= ~DeviceFlags.DEVICE_INITIALIZING

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLOSE, IrpMajor.CLEANUP)
    async def open_close(self, device: DeviceObject, irp: Irp) -> int:
        return _complete(irp, STATUS_SUCCESS)

    @airp.dispatch(IrpMajor.READ, IrpMajor.WRITE)
    async def read_write(self, device: DeviceObject[_Ext], irp: Irp) -> int:
        ext = device.extension
        if ext.gone:
            return _complete(irp, STATUS_NO_SUCH_DEVICE)
        status = ext.lock.acquire(irp)
        if status != STATUS_SUCCESS:
            return _complete(irp, status)
        try:
            return ext.lane.start_packet(irp)
        finally:
            ext.lock.release(irp)

    async def start_io(self, device: DeviceObject[_Ext], irp: Irp) -> None:
        ext = device.extension
        tag = ("start_io", irp)
        status = ext.lock.acquire(tag)
        if status != STATUS_SUCCESS:
            complete_request(irp, status, 0)
            return
        self.started_io += 1
        try:
            if await airp.wait_or_cancelled(irp, self.latency):
                complete_request(irp, STATUS_CANCELLED, 0)
                return
            loc = irp.current_stack_location
            length = loc.parameters.length
            if loc.major == IrpMajor.READ and irp.system_buffer is not None:
                irp.system_buffer[:length] = b"r" * length
            complete_request(irp, STATUS_SUCCESS, length)
        finally:
            ext.lock.release(tag)

    @airp.dispatch(IrpMajor.DEVICE_CONTROL)
    async def ioctl(self, device: DeviceObject[_Ext], irp: Irp) -> int:
        ext = device.extension
        if ext.gone:
            return _complete(irp, STATUS_NO_SUCH_DEVICE)
        status = ext.lock.acquire(irp)
        if status != STATUS_SUCCESS:
            return _complete(irp, status)
        try:
            return ext.ctl.insert(irp)
        finally:
            ext.lock.release(irp)

    async def on_ioctl(self, queue: airp.IoQueue, request: airp.Request) -> None:
        ext: _Ext = queue.device.extension
        tag = ("ioctl", request.irp)
        status = ext.lock.acquire(tag)
        if status != STATUS_SUCCESS:
            request.complete(status, 0)
            return
        try:
            if await airp.wait_or_cancelled(request, self.latency):
                request.complete(STATUS_CANCELLED, 0)
            else:
                request.complete(STATUS_SUCCESS, 0)
        finally:
            ext.lock.release(tag)

    @airp.dispatch(IrpMajor.PNP)
    async def pnp(self, device: DeviceObject[_Ext], irp: Irp) -> int:
        minor = self.log.arrive(self, device, irp)
        ext = device.extension
        lower = device.lower_device
        assert lower is not None
        bugs = self.bugs
        if minor == PnpMinor.START_DEVICE:
            if "fail_start" in bugs:
                return _complete(irp, STATUS_UNSUCCESSFUL)
            status, _ = await airp.forward_and_wait(lower, irp)
            self.log.start_post.append(self.name)
            return _complete(irp, status)
        if minor == PnpMinor.QUERY_REMOVE_DEVICE:
            if "veto_query" in bugs:
                return _complete(irp, STATUS_UNSUCCESSFUL)
            return await _pass_down_success(device, irp)  # type: ignore[no-any-return]
        if minor == PnpMinor.CANCEL_REMOVE_DEVICE:
            return await _pass_down_success(device, irp)  # type: ignore[no-any-return]
        if minor == PnpMinor.SURPRISE_REMOVAL:
            ext.gone = True
            if "detach_in_surprise" in bugs:
                airp.detach_device(lower)
            if "delete_in_surprise" in bugs:
                airp.delete_device(device)
            return await _pass_down_success(device, irp)  # type: ignore[no-any-return]
        if minor == PnpMinor.REMOVE_DEVICE:
            ext.gone = True
            # REMOVE holds the lock like any request; release_and_wait gives that back.
            ext.lock.acquire(irp)
            irp.status = NtStatus(STATUS_SUCCESS)
            if "fail_remove" in bugs:
                # A PnP IRP's final status is the one it is completed with: to fail REMOVE the
                # driver waits for it to come back and completes it with a failure.
                await airp.forward_and_wait(lower, irp)
            else:
                irp.skip_current_stack_location()
                status = await airp.call_driver(lower, irp)
            await ext.lock.release_and_wait(irp)
            if "delete_attached" in bugs:
                airp.delete_device(device)
            if "no_detach" not in bugs:
                airp.detach_device(lower)
                if "no_delete" not in bugs:
                    airp.delete_device(device)
            if "delete_twice" in bugs:
                airp.delete_device(device)
            if "fail_remove" in bugs:
                return _complete(irp, STATUS_UNSUCCESSFUL)
            return status
        return await airp.pass_down(device, irp)


class AsyncUnloadFunction(Function):
    """A :class:`Function` whose unload() is a coroutine function that takes device time."""

    async def unload(self) -> None:  # type: ignore[override]
        await anyio.sleep(0.5)
        self.log.unloaded.append(self.name)


class Filter(airp.Driver):
    """A filter: I/O forwarded with a counting completion routine, PnP handled as a filter must.

    :param log: where it writes what it saw.
    :param name: its name.
    """

    pass_through = True

    def __init__(self, log: Log, name: str = "filter") -> None:
        super().__init__(name)
        self.log = log

    def add_device(self, pdo: DeviceObject) -> None:
        self.log.add_order.append(self.name)
        device = DeviceObject(self)
        airp.attach_device(device, pdo)
        device.flags &= ~DeviceFlags.DEVICE_INITIALIZING

    def on_complete(self, device: DeviceObject | None, irp: Irp, context: Any) -> int:
        if irp.pending_returned:
            irp.mark_pending()
        self.log.completions[irp] = self.log.completions.get(irp, 0) + 1
        return STATUS_CONTINUE_COMPLETION

    @airp.dispatch(IrpMajor.READ, IrpMajor.WRITE, IrpMajor.DEVICE_CONTROL)
    async def forward(self, device: DeviceObject, irp: Irp) -> int:
        assert device.lower_device is not None
        irp.copy_current_stack_location_to_next()
        irp.set_completion_routine(self.on_complete)
        self.log.forwarded.append(irp)
        return await airp.call_driver(device.lower_device, irp)

    @airp.dispatch(IrpMajor.PNP)
    async def pnp(self, device: DeviceObject, irp: Irp) -> int:
        minor = self.log.arrive(self, device, irp)
        lower = device.lower_device
        assert lower is not None
        if minor == PnpMinor.START_DEVICE:
            status, _ = await airp.forward_and_wait(lower, irp)
            self.log.start_post.append(self.name)
            return _complete(irp, status)
        if minor == PnpMinor.REMOVE_DEVICE:
            irp.status = NtStatus(STATUS_SUCCESS)
            status = await airp.pass_down(device, irp)
            airp.detach_device(lower)
            airp.delete_device(device)
            return status
        if minor in (PnpMinor.QUERY_REMOVE_DEVICE, PnpMinor.CANCEL_REMOVE_DEVICE, PnpMinor.SURPRISE_REMOVAL):
            return await _pass_down_success(device, irp)  # type: ignore[no-any-return]
        return await airp.pass_down(device, irp)


class Plain(airp.Driver):
    """add_device and nothing else: every IRP goes to airp's default dispatch."""

    def __init__(self, log: Log, name: str = "plain") -> None:
        super().__init__(name)
        self.log = log

    def add_device(self, pdo: DeviceObject) -> None:
        self.log.add_order.append(self.name)
        device = DeviceObject(self)
        airp.attach_device(device, pdo)
        device.flags &= ~DeviceFlags.DEVICE_INITIALIZING


@dataclass
class ChildExt:
    """A child PDO's extension: what the PnP manager reads to pick its stack."""

    hardware_id: str
    bus: DeviceObject


class Bus(airp.Driver):
    """A bus driver: its FDO reports the children plugged into it; it serves their PDOs too.

    :param log: where it writes what it saw.
    :param name: its name.
    """

    pass_through = True

    def __init__(self, log: Log, name: str = "bus") -> None:
        super().__init__(name)
        self.log = log
        self.fdos: list[DeviceObject] = []
        #: Child PDOs present, per bus FDO.
        self.children: dict[DeviceObject, list[DeviceObject]] = {}

    def add_device(self, pdo: DeviceObject) -> None:
        self.log.add_order.append(self.name)
        fdo = DeviceObject(self)
        airp.attach_device(fdo, pdo)
        fdo.flags &= ~DeviceFlags.DEVICE_INITIALIZING
        self.fdos.append(fdo)
        self.children[fdo] = []

    def plug(self, fdo: DeviceObject, hardware_id: str, name: str | None = None) -> DeviceObject:
        """A child appears on the bus (report it with ``io.invalidate_device_relations``)."""
        pdo = DeviceObject(self, name, extension=ChildExt(hardware_id, fdo))
        self.children[fdo].append(pdo)
        return pdo

    def unplug(self, pdo: DeviceObject) -> None:
        """A child leaves the bus: it is no longer reported."""
        self.children[pdo.extension.bus].remove(pdo)

    @airp.dispatch(IrpMajor.PNP)
    async def pnp(self, device: DeviceObject, irp: Irp) -> int:
        minor = self.log.arrive(self, device, irp)
        if isinstance(device.extension, ChildExt):
            return self._pdo_pnp(device, irp, minor)
        lower = device.lower_device
        assert lower is not None
        if minor == PnpMinor.QUERY_DEVICE_RELATIONS:
            params = irp.current_stack_location.parameters
            if params.type == airp.DeviceRelationType.BUS_RELATIONS:
                params.relations.extend(self.children[device])
                irp.status = NtStatus(STATUS_SUCCESS)
            return await airp.pass_down(device, irp)
        if minor == PnpMinor.START_DEVICE:
            status, _ = await airp.forward_and_wait(lower, irp)
            self.log.start_post.append(self.name)
            return _complete(irp, status)
        if minor == PnpMinor.REMOVE_DEVICE:
            irp.status = NtStatus(STATUS_SUCCESS)
            status = await airp.pass_down(device, irp)
            airp.detach_device(lower)
            airp.delete_device(device)
            self.fdos.remove(device)
            return status
        if minor in (PnpMinor.QUERY_REMOVE_DEVICE, PnpMinor.CANCEL_REMOVE_DEVICE, PnpMinor.SURPRISE_REMOVAL):
            return await _pass_down_success(device, irp)  # type: ignore[no-any-return]
        return await airp.pass_down(device, irp)

    def _pdo_pnp(self, pdo: DeviceObject, irp: Irp, minor: PnpMinor) -> int:
        if minor == PnpMinor.REMOVE_DEVICE:
            # Removed: a PDO still reported would stay (Windows keeps it until it is unplugged);
            # this bus forgets the child, so the removed device is gone for good.
            siblings = self.children.get(pdo.extension.bus, [])
            if pdo in siblings:
                siblings.remove(pdo)
            airp.delete_device(pdo)
            return _complete(irp, STATUS_SUCCESS)
        if minor in (
            PnpMinor.START_DEVICE,
            PnpMinor.QUERY_REMOVE_DEVICE,
            PnpMinor.CANCEL_REMOVE_DEVICE,
            PnpMinor.SURPRISE_REMOVAL,
        ):
            return _complete(irp, STATUS_SUCCESS)
        return _complete(irp, irp.status, irp.information)
