"""A Plug and Play function driver in the spirit of Microsoft's toaster sample: copy this one.

What to copy, routine by routine:

- :meth:`Toaster.add_device` (AddDevice): create the device with its extension, attach it to the
  stack, keep the device below (``lower``), declare the queue (a :class:`airp.StartIoQueue`
  lane), make the remove lock, clear ``DO_DEVICE_INITIALIZING``.
- :meth:`Toaster.read_write` (a dispatch routine): acquire the remove lock for the request
  (refused: complete with STATUS_DELETE_PENDING), refuse I/O once the device is gone
  (STATUS_NO_SUCH_DEVICE), check the parameters, hand the IRP to the lane, release the lock.
- :meth:`Toaster.start_io` (the lane's StartIo routine): acquire the lock again for the time the
  "hardware" works, wait for it with :func:`airp.wait_or_cancelled` (a removal cancels the
  transfer), complete.
- :meth:`Toaster.pnp`: START_DEVICE goes down first and is finished on the way up
  (``forward_and_wait``); SURPRISE_REMOVAL fails what the driver holds and passes down;
  REMOVE_DEVICE passes down, waits on the remove lock (``release_and_wait``), detaches, deletes.
- :meth:`Toaster.unload`: let go of the driver's global state.

Requests waiting in the lane are airp's to finish: the PnP manager stops the lane before
SURPRISE_REMOVAL and REMOVE_DEVICE go down (queued IRPs complete with STATUS_NO_SUCH_DEVICE, the
one in progress is cancelled and finished by :meth:`Toaster.start_io`).  The remove lock covers what
the driver holds outside the lane: a dispatch routine in flight, a StartIo routine working.

The data: a small byte store per device, like the RAM disk's, so a read returns what a write wrote.
"""

from __future__ import annotations

from typing import Final

import airp
from airp import (
    STATUS_CANCELLED,
    STATUS_END_OF_FILE,
    STATUS_INVALID_PARAMETER,
    STATUS_NO_SUCH_DEVICE,
    STATUS_SUCCESS,
    DeviceFlags,
    DeviceObject,
    Irp,
    IrpMajor,
    PnpMinor,
    PnpState,
    complete_request,
)

__all__ = ["IOCTL_TOASTER_GET_SIZE", "Toaster", "ToasterDevice"]

#: Returns the device's store size as 8 little-endian bytes (METHOD_BUFFERED).
IOCTL_TOASTER_GET_SIZE: Final = airp.ControlCode.make(0x8002, 0x802)

#: The states in which the hardware is gone and I/O is refused with STATUS_NO_SUCH_DEVICE.
_GONE: Final = (PnpState.SURPRISE_REMOVED, PnpState.REMOVED)


class ToasterDevice:
    """The device extension of a toaster (``FDO_DATA``).

    :ivar lower: the device below (what ``attach_device`` returned): PnP requests go there.
    :ivar lock: the remove lock, held for every request the driver works on.
    :ivar lane: the StartIo queue reads and writes go through, one at a time.
    :ivar data: the byte store.
    :ivar latency: seconds the "hardware" takes per transfer.
    """

    def __init__(self, name: str, size: int, latency: float) -> None:
        self.lock = airp.RemoveLock(name)
        self.data = bytearray(size)
        self.latency = latency
        self.lower: DeviceObject | None = None
        self.lane: airp.StartIoQueue | None = None


class Toaster(airp.Driver):
    """The toaster function driver (plugin ``toaster``).  One driver object serves all its devices.

    Parameters are the driver's "registry" values, read once when it is loaded
    (``io.load_driver("toaster", size=..., latency=...)``).

    :param size: each device's store, in bytes.
    :param latency: seconds each read or write takes in the StartIo routine (virtual time in tests).
    :ivar unloaded: True once :meth:`unload` has run.
    """

    IOCTL_GET_SIZE = IOCTL_TOASTER_GET_SIZE

    def __init__(self, size: int = 4096, latency: float = 0.001) -> None:
        super().__init__("toaster")
        self.size = size
        self.latency = latency
        self.unloaded = False
        # Global state: how many devices this driver has made, for the remove locks' names.
        self._instances = 0

    # -- AddDevice and Unload ------------------------------------------------------------------

    def add_device(self, pdo: DeviceObject) -> DeviceObject[ToasterDevice]:
        """AddDevice: create the toaster's device, attach it above *pdo*, set up its lane and lock.

        :param pdo: the physical device object at the bottom of the new stack.
        :returns: the new device (the PnP manager only needs it attached).
        """
        self._instances += 1
        extension = ToasterDevice(f"toaster {self._instances}", self.size, self.latency)
        device = DeviceObject(self, extension=extension, flags=DeviceFlags.BUFFERED_IO)
        extension.lower = airp.attach_device(device, pdo)
        extension.lane = airp.StartIoQueue(device, "io", self.start_io)
        # The device is ready for requests: without this the PnP manager bug-checks (0xC9/0x243).
        device.flags &= ~DeviceFlags.DEVICE_INITIALIZING
        return device

    def unload(self) -> None:
        """DriverUnload: the PnP manager calls it once the driver has no device left."""
        self._instances = 0
        self.unloaded = True

    # -- I/O -----------------------------------------------------------------------------------

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLOSE, IrpMajor.CLEANUP)
    async def create_close(self, device: DeviceObject[ToasterDevice], irp: Irp) -> int:
        """Opening and closing always succeed; the I/O manager already refuses creates to a gone device.

        :returns: STATUS_SUCCESS.
        """
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ, IrpMajor.WRITE)
    async def read_write(self, device: DeviceObject[ToasterDevice], irp: Irp) -> int:
        """Check the request under the remove lock and queue it on the lane.

        :returns: STATUS_PENDING (queued), or the status the request was failed with.
        """
        extension = device.extension
        status = extension.lock.acquire(irp)
        if status != STATUS_SUCCESS:
            # release_and_wait has begun: the device is being removed.
            complete_request(irp, status, 0)
            return status
        try:
            if device.pnp_state in _GONE:
                complete_request(irp, STATUS_NO_SUCH_DEVICE, 0)
                return STATUS_NO_SUCH_DEVICE
            params = irp.current_stack_location.parameters
            if IrpMajor(irp.current_stack_location.major) is IrpMajor.READ:
                if params.byte_offset >= len(extension.data):
                    complete_request(irp, STATUS_END_OF_FILE, 0)
                    return STATUS_END_OF_FILE
            elif params.byte_offset + params.length > len(extension.data):
                complete_request(irp, STATUS_INVALID_PARAMETER, 0)
                return STATUS_INVALID_PARAMETER
            assert extension.lane is not None
            # The lane owns the IRP from here: the PnP manager stops it at removal, completing
            # what waits in it, so the lock need not be held while it waits.
            return extension.lane.start_packet(irp)
        finally:
            extension.lock.release(irp)

    async def start_io(self, device: DeviceObject[ToasterDevice], irp: Irp) -> None:
        """The lane's StartIo routine: the "hardware" moves the bytes, taking ``latency`` seconds.

        Holds the remove lock while it works.  A removal cancels the transfer (``irp.cancel``):
        the request then fails with STATUS_NO_SUCH_DEVICE if the device is gone, else
        STATUS_CANCELLED (its requester gave up).

        On cancellation (the device's task group torn down): airp completes the IRP with the
        removal status; the lock is released on the way out.
        """
        extension = device.extension
        status = extension.lock.acquire(irp)
        if status != STATUS_SUCCESS:
            complete_request(irp, status, 0)
            return
        try:
            if await airp.wait_or_cancelled(irp, extension.latency):
                complete_request(irp, STATUS_NO_SUCH_DEVICE if device.pnp_state in _GONE else STATUS_CANCELLED, 0)
                return
            location = irp.current_stack_location
            params = location.parameters
            assert irp.system_buffer is not None  # the device is DO_BUFFERED_IO
            start = params.byte_offset
            if IrpMajor(location.major) is IrpMajor.READ:
                chunk = extension.data[start : start + params.length]
                irp.system_buffer[: len(chunk)] = chunk
                complete_request(irp, STATUS_SUCCESS, len(chunk))
            else:
                extension.data[start : start + params.length] = irp.system_buffer[: params.length]
                complete_request(irp, STATUS_SUCCESS, params.length)
        finally:
            extension.lock.release(irp)

    @airp.dispatch(IrpMajor.DEVICE_CONTROL)
    async def device_control(self, device: DeviceObject[ToasterDevice], irp: Irp) -> int:
        """Answer IOCTL_TOASTER_GET_SIZE; pass every other control code down (the bus may know it).

        :returns: the request's status (the lower driver's for codes passed down).
        """
        extension = device.extension
        status = extension.lock.acquire(irp)
        if status != STATUS_SUCCESS:
            complete_request(irp, status, 0)
            return status
        try:
            if device.pnp_state in _GONE:
                complete_request(irp, STATUS_NO_SUCH_DEVICE, 0)
                return STATUS_NO_SUCH_DEVICE
            params = irp.current_stack_location.parameters
            if params.io_control_code != IOCTL_TOASTER_GET_SIZE:
                return await airp.pass_down(device, irp)
            if params.output_buffer_length < 8:
                complete_request(irp, airp.STATUS_BUFFER_TOO_SMALL, 0)
                return airp.STATUS_BUFFER_TOO_SMALL
            assert irp.system_buffer is not None
            irp.system_buffer[:8] = len(extension.data).to_bytes(8, "little")
            complete_request(irp, STATUS_SUCCESS, 8)
            return STATUS_SUCCESS
        finally:
            extension.lock.release(irp)

    # -- Plug and Play ---------------------------------------------------------------------------

    @airp.dispatch(IrpMajor.PNP)
    async def pnp(self, device: DeviceObject[ToasterDevice], irp: Irp) -> int:
        """The PnP requests of reference 8.2, as the toaster sample handles them.

        :returns: the request's status.
        """
        extension = device.extension
        lower = extension.lower
        assert lower is not None
        lock = extension.lock
        status = lock.acquire(irp)
        if status != STATUS_SUCCESS:
            complete_request(irp, status, 0)
            return status
        minor = irp.current_stack_location.minor
        if minor == PnpMinor.REMOVE_DEVICE:
            # Keep this acquisition: release_and_wait gives it back and waits for every other.
            irp.status = STATUS_SUCCESS
            status = await airp.pass_down(device, irp)
            await lock.release_and_wait(irp)
            airp.detach_device(lower)
            airp.delete_device(device)
            return status
        try:
            if minor == PnpMinor.START_DEVICE:
                # The lower drivers (the bus) start first; ours is finished on the way back up.
                lower_status, _ = await airp.forward_and_wait(lower, irp)
                complete_request(irp, lower_status, 0)
                return lower_status
            if minor in (PnpMinor.SURPRISE_REMOVAL, PnpMinor.QUERY_REMOVE_DEVICE, PnpMinor.CANCEL_REMOVE_DEVICE):
                # SURPRISE_REMOVAL: the driver holds nothing outside its lane, which airp has
                # already stopped; read_write refuses new I/O from now on (pnp_state).  Never
                # detach or delete here: the stack stays until the last handle closes.
                irp.status = STATUS_SUCCESS
            return await airp.pass_down(device, irp)
        finally:
            lock.release(irp)
