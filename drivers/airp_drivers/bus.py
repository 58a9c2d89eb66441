"""Bus drivers: the toaster bus, which enumerates child devices on demand, and the demo bus.

:class:`ToasterBus` (plugin ``toaster-bus``) is the one to copy.  A bus driver has two kinds of
device, and one set of dispatch routines tells them apart by their extension (the toaster sample's
``IsFDO``):

- its **FDO**, which its ``add_device`` attaches to the bus's own PDO like any function device.
  It answers IRP_MN_QUERY_DEVICE_RELATIONS (BusRelations) with the children present, and
  handles START/REMOVE as a function driver does (remove lock, detach, delete);
- one **child PDO** per device plugged in, which it creates itself (:meth:`ToasterBus.plug_in`)
  and reports; each is the bottom of a new stack, built by the PnP manager from the drivers
  registered for the child's hardware id.  At the bottom there is nobody to pass requests to: a
  PDO completes its PnP requests (success for the ones a PDO must succeed, the status they carry
  for the others) and deletes itself at REMOVE_DEVICE only once the device has really left the bus.

Plugging in and pulling out::

    bus = io.load_driver("toaster-bus")
    bus_node = await io.add_device("toaster-bus", name=r"\\Device\\ToasterBus", function=bus)
    await io.start_device(bus_node)
    io.register_stack("toaster", function="toaster")
    bus.plug_in("S-0001")                              # the device arrives...
    await io.invalidate_device_relations(bus_node)     # ...the PnP manager builds and starts its stack
    bus.unplug("S-0001")                               # the device is pulled out...
    await io.invalidate_device_relations(bus_node)     # ...its stack is surprise-removed

:class:`DemoBus` (plugin ``demo-bus``) is the bottom of a stack built by hand, without PnP.
"""

from __future__ import annotations

from typing import Final

import airp
from airp import (
    STATUS_INVALID_DEVICE_REQUEST,
    STATUS_SUCCESS,
    DeviceFlags,
    DeviceObject,
    DeviceRelationType,
    Irp,
    IrpMajor,
    PnpMinor,
    complete_request,
)

__all__ = ["IOCTL_BUS_GET_SERIAL", "BusFdo", "ChildPdo", "DemoBus", "ToasterBus"]

#: Returns the device serial number as ASCII (METHOD_BUFFERED).
IOCTL_BUS_GET_SERIAL: Final = airp.ControlCode.make(0x8001, 0x801)

# The PnP requests a PDO must succeed (reference 8.2): it has no hardware to start or stop here.
_PDO_SUCCEEDS: Final = frozenset(
    (
        PnpMinor.START_DEVICE,
        PnpMinor.QUERY_REMOVE_DEVICE,
        PnpMinor.CANCEL_REMOVE_DEVICE,
        PnpMinor.SURPRISE_REMOVAL,
        PnpMinor.REMOVE_DEVICE,
    )
)


def _answer_serial(serial: bytes, irp: Irp) -> int:
    params = irp.current_stack_location.parameters
    if params.io_control_code != IOCTL_BUS_GET_SERIAL:
        complete_request(irp, STATUS_INVALID_DEVICE_REQUEST, 0)
        return STATUS_INVALID_DEVICE_REQUEST
    count = min(len(serial), params.output_buffer_length)
    assert irp.system_buffer is not None
    irp.system_buffer[:count] = serial[:count]
    # Too small a buffer is a warning, not an error: the data that fits still comes back.
    status = STATUS_SUCCESS if count == len(serial) else airp.STATUS_BUFFER_OVERFLOW
    complete_request(irp, status, count)
    return status


class ChildPdo:
    """The extension of a child PDO (``PDO_DEVICE_DATA``).

    :ivar hardware_id: the kind of device: the PnP manager builds the stack registered for it.
    :ivar serial: the device's serial number, unique on its bus.
    :ivar present: False once :meth:`ToasterBus.unplug` has pulled the device out.
    :ivar reported: True once the bus has reported the child to the PnP manager (in its answer to
        IRP_MN_QUERY_DEVICE_RELATIONS): from then on the PnP manager builds a stack on the PDO and
        removes it, and the PDO goes at its IRP_MN_REMOVE_DEVICE.  Until then the PDO is the bus's
        alone, and :meth:`ToasterBus.unplug` deletes it.
    :ivar bus: the FDO of the bus the child is plugged into.
    """

    def __init__(self, hardware_id: str, serial: str, bus: DeviceObject[BusFdo]) -> None:
        self.hardware_id = hardware_id
        self.serial = serial
        self.present = True
        self.reported = False
        self.bus = bus


class BusFdo:
    """The extension of the bus's FDO (``FDO_DEVICE_DATA``).

    :ivar lower: the device below (the bus's own PDO).
    :ivar lock: the remove lock, held for every request the FDO works on.
    :ivar children: the child PDOs, by serial: present ones and pulled-out ones not yet removed
        (the latest PDO for a serial plugged in again).
    """

    def __init__(self, name: str) -> None:
        self.lower: DeviceObject | None = None
        self.lock = airp.RemoveLock(name)
        self.children: dict[str, DeviceObject[ChildPdo]] = {}


class ToasterBus(airp.Driver):
    """A bus that enumerates toasters on demand (plugin ``toaster-bus``).

    Child PDOs are named ``\\Device\\Toaster{n}`` (n counting from 0 over the driver's life), so a
    requester opens a child by that name.  Each answers IOCTL_BUS_GET_SERIAL with its serial.

    :ivar unloaded: True once :meth:`unload` has run.
    """

    IOCTL_GET_SERIAL = IOCTL_BUS_GET_SERIAL

    def __init__(self) -> None:
        super().__init__("toaster-bus")
        self.unloaded = False
        # Global state: the next child's number (its PDO's name).
        self._next_child = 0

    # -- AddDevice and Unload ------------------------------------------------------------------

    def add_device(self, pdo: DeviceObject) -> DeviceObject[BusFdo]:
        """AddDevice: create the bus's FDO and attach it above the bus's own *pdo*.

        :param pdo: the PDO the bus itself was found on (the root bus's, for ``io.add_device``).
        :returns: the FDO.
        """
        extension = BusFdo(f"toaster bus {pdo.name or len(self.devices)}")
        fdo = DeviceObject(self, extension=extension)
        extension.lower = airp.attach_device(fdo, pdo)
        fdo.flags &= ~DeviceFlags.DEVICE_INITIALIZING
        return fdo

    def unload(self) -> None:
        """DriverUnload: the PnP manager calls it once the driver has no device left."""
        self._next_child = 0
        self.unloaded = True

    # -- the bus's hardware: devices arriving and leaving ---------------------------------------

    def plug_in(self, serial: str, hardware_id: str = "toaster", *, bus: DeviceObject[BusFdo] | None = None) -> DeviceObject[ChildPdo]:
        """A device arrives on the bus: create its PDO.  Then ``await io.invalidate_device_relations(bus_node)``.

        :param serial: the device's serial number, unique on the bus.
        :param hardware_id: names the stack the PnP manager builds on the PDO (``io.register_stack``).
        :param bus: the bus FDO to plug into; only needed when the driver has several.
        :returns: the child PDO (NOT_STARTED until the PnP manager has built and started its stack).
        :raises ValueError: if a device with that serial is plugged in already.
        """
        fdo = self._fdo(bus)
        existing = fdo.extension.children.get(serial)
        if existing is not None and existing.extension.present:
            raise ValueError(f"a device with serial {serial!r} is already on {fdo!r}")
        # A device plugged back in before the stack of its last visit was removed (a handle still
        # open there) gets a new PDO; the old one deletes itself at its own REMOVE_DEVICE.
        name = f"\\Device\\Toaster{self._next_child}"
        self._next_child += 1
        # DO_BUFFERED_IO here: the drivers attached above copy it, and the I/O manager reads it
        # at the top of the stack to choose how reads and writes carry their data.
        pdo = DeviceObject(self, name, extension=ChildPdo(hardware_id, serial, fdo), flags=DeviceFlags.BUFFERED_IO)
        fdo.extension.children[serial] = pdo
        return pdo

    def unplug(self, serial: str, *, bus: DeviceObject[BusFdo] | None = None) -> DeviceObject[ChildPdo]:
        """The device is pulled out: the next enumeration leaves it out, so it is surprise-removed.

        Then ``await io.invalidate_device_relations(bus_node)``.  Its PDO stays until its stack's
        IRP_MN_REMOVE_DEVICE, which follows when the last handle on it closes.  A device pulled
        out before any enumeration reported it has no stack and will get no REMOVE_DEVICE: its
        PDO is deleted here, at once.

        :param serial: the serial :meth:`plug_in` was given.
        :param bus: the bus FDO; only needed when the driver has several.
        :returns: the child PDO.
        :raises LookupError: if no device with that serial is on the bus.
        """
        fdo = self._fdo(bus)
        pdo = fdo.extension.children.get(serial)
        if pdo is None or not pdo.extension.present:
            known = ", ".join(s for s, p in fdo.extension.children.items() if p.extension.present) or "none"
            raise LookupError(f"no device with serial {serial!r} is plugged into {fdo!r} (present: {known})")
        pdo.extension.present = False
        if not pdo.extension.reported:
            # The PnP manager never heard of it, so no REMOVE_DEVICE will come to delete it: the
            # bus deletes it itself, or it would stay in its children and devices until the bus goes.
            del fdo.extension.children[serial]
            airp.delete_device(pdo)
        return pdo

    def children(self, *, bus: DeviceObject[BusFdo] | None = None) -> list[DeviceObject[ChildPdo]]:
        """The child PDOs present on the bus, in the order they were plugged in.

        :param bus: the bus FDO; only needed when the driver has several.
        """
        return [pdo for pdo in self._fdo(bus).extension.children.values() if pdo.extension.present]

    def _fdo(self, bus: DeviceObject[BusFdo] | None) -> DeviceObject[BusFdo]:
        if bus is not None:
            return bus
        fdos = [device for device in self.devices if isinstance(device.extension, BusFdo)]
        if len(fdos) != 1:
            raise LookupError(f"{self!r} has {len(fdos)} bus FDOs: say which with bus= (add_device makes one per bus)")
        return fdos[0]

    # -- dispatch: the FDO and the child PDOs ---------------------------------------------------

    @airp.dispatch(IrpMajor.PNP)
    async def pnp(self, device: DeviceObject, irp: Irp) -> int:
        """PnP for both kinds of device: :meth:`fdo_pnp` for the bus, :meth:`pdo_pnp` for a child.

        :returns: the request's status.
        """
        if isinstance(device.extension, ChildPdo):
            return self.pdo_pnp(device, irp)
        return await self.fdo_pnp(device, irp)

    async def fdo_pnp(self, fdo: DeviceObject[BusFdo], irp: Irp) -> int:
        """The bus FDO's PnP requests, under its remove lock.

        :returns: the request's status.
        """
        extension = fdo.extension
        lower = extension.lower
        assert lower is not None
        lock = extension.lock
        status = lock.acquire(irp)
        if status != STATUS_SUCCESS:
            complete_request(irp, status, 0)
            return status
        location = irp.current_stack_location
        minor = location.minor
        if minor == PnpMinor.REMOVE_DEVICE:
            # The children were removed first (the PnP manager sees to it); the PDOs of those
            # still plugged in were kept by their own REMOVE and go now, with their bus.
            irp.status = STATUS_SUCCESS
            status = await airp.pass_down(fdo, irp)
            await lock.release_and_wait(irp)
            for pdo in extension.children.values():
                if not pdo.deleted:
                    airp.delete_device(pdo)
            extension.children.clear()
            airp.detach_device(lower)
            airp.delete_device(fdo)
            return status
        try:
            if minor == PnpMinor.START_DEVICE:
                lower_status, _ = await airp.forward_and_wait(lower, irp)
                complete_request(irp, lower_status, 0)
                return lower_status
            if minor == PnpMinor.QUERY_DEVICE_RELATIONS and location.parameters.type == DeviceRelationType.BUS_RELATIONS:
                # Report every child still present; one left out is surprise-removed.
                for pdo in extension.children.values():
                    if pdo.extension.present:
                        pdo.extension.reported = True
                        location.parameters.relations.append(pdo)
                irp.status = STATUS_SUCCESS
            elif minor in (PnpMinor.SURPRISE_REMOVAL, PnpMinor.QUERY_REMOVE_DEVICE, PnpMinor.CANCEL_REMOVE_DEVICE):
                irp.status = STATUS_SUCCESS
            return await airp.pass_down(fdo, irp)
        finally:
            lock.release(irp)

    def pdo_pnp(self, pdo: DeviceObject[ChildPdo], irp: Irp) -> int:
        """A child PDO's PnP requests: the bottom of its stack, so it completes every one.

        :returns: the request's status.
        """
        minor = irp.current_stack_location.minor
        if minor not in _PDO_SUCCEEDS:
            # Not ours to answer (QUERY_DEVICE_RELATIONS: a toaster is no bus): the status it carries.
            status = irp.status
            complete_request(irp, status, irp.information)
            return status
        if minor == PnpMinor.REMOVE_DEVICE:
            child = pdo.extension
            if not child.present:
                # The device has left the bus: its PDO goes with its stack.
                airp.delete_device(pdo)
                bus = child.bus.extension.children
                if bus.get(child.serial) is pdo:
                    del bus[child.serial]
            # Still plugged in (an orderly removal): the PDO stays until the bus goes.
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.DEVICE_CONTROL)
    async def device_control(self, device: DeviceObject, irp: Irp) -> int:
        """A child answers IOCTL_BUS_GET_SERIAL with its serial; the bus FDO answers nothing.

        :returns: the request's status.
        """
        if isinstance(device.extension, ChildPdo):
            return _answer_serial(device.extension.serial.encode("ascii"), irp)
        complete_request(irp, STATUS_INVALID_DEVICE_REQUEST, 0)
        return STATUS_INVALID_DEVICE_REQUEST


class DemoBus(airp.Driver):
    """The bottom of a stack built by hand (no PnP): answers IOCTL_BUS_GET_SERIAL, fails the rest.

    :param serial: what IOCTL_BUS_GET_SERIAL returns.
    """

    IOCTL_GET_SERIAL = IOCTL_BUS_GET_SERIAL

    def __init__(self, serial: bytes = b"AIRP-0001") -> None:
        super().__init__("demo-bus")
        self.serial = serial

    @airp.dispatch(IrpMajor.DEVICE_CONTROL)
    async def device_control(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        """Answer IOCTL_BUS_GET_SERIAL; fail every other control code.

        :returns: the request's status.
        """
        return _answer_serial(self.serial, irp)
