"""A RAM disk function driver: reads complete at once, writes are pended and flushed later.

It shows the two ways a function driver finishes a request: completing it inside the dispatch
routine, and marking it pending, returning STATUS_PENDING, and completing it later from another
task (the "flusher", which stands in for hardware finishing a transfer).  Device-control codes it
does not know are passed down to the device below.
"""

from __future__ import annotations

import anyio

import airp
from airp import IrpMajor, complete_request

#: Returns the disk size as 8 little-endian bytes (METHOD_BUFFERED).
IOCTL_RAMDISK_GET_SIZE = airp.ControlCode.make(0x8000, 0x800)


class RamDisk(airp.Driver):
    """A byte array behind a device.  Extension: ``RamDiskState``.

    :param size: the disk size in bytes.
    :param write_latency: seconds the flusher takes per write.
    """

    IOCTL_GET_SIZE = IOCTL_RAMDISK_GET_SIZE

    def __init__(self, size: int = 4096, write_latency: float = 0.01) -> None:
        super().__init__("ramdisk")
        self.data = bytearray(size)
        self.write_latency = write_latency
        self._send, self._receive = anyio.create_memory_object_stream[airp.Irp](1000)

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLOSE, IrpMajor.CLEANUP)
    async def open_close(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        complete_request(irp, airp.STATUS_SUCCESS, 0)
        return airp.STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        params = irp.current_stack_location.parameters
        if params.byte_offset >= len(self.data):
            complete_request(irp, airp.STATUS_END_OF_FILE, 0)
            return airp.STATUS_END_OF_FILE
        chunk = self.data[params.byte_offset : params.byte_offset + params.length]
        assert irp.system_buffer is not None  # the device is DO_BUFFERED_IO
        irp.system_buffer[: len(chunk)] = chunk
        complete_request(irp, airp.STATUS_SUCCESS, len(chunk))
        return airp.STATUS_SUCCESS

    @airp.dispatch(IrpMajor.WRITE)
    async def write(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        params = irp.current_stack_location.parameters
        if params.byte_offset + params.length > len(self.data):
            complete_request(irp, airp.STATUS_INVALID_PARAMETER, 0)
            return airp.STATUS_INVALID_PARAMETER
        irp.mark_pending()
        self._send.send_nowait(irp)
        return airp.STATUS_PENDING

    @airp.dispatch(IrpMajor.DEVICE_CONTROL)
    async def device_control(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        params = irp.current_stack_location.parameters
        if params.io_control_code == IOCTL_RAMDISK_GET_SIZE:
            if params.output_buffer_length < 8:
                complete_request(irp, airp.STATUS_BUFFER_TOO_SMALL, 0)
                return airp.STATUS_BUFFER_TOO_SMALL
            assert irp.system_buffer is not None
            irp.system_buffer[:8] = len(self.data).to_bytes(8, "little")
            complete_request(irp, airp.STATUS_SUCCESS, 8)
            return airp.STATUS_SUCCESS
        return await airp.pass_down(device, irp)

    async def run_flusher(self) -> None:
        """The hardware: finishes pended writes one at a time.  Run it in a task group.

        On cancellation: stops; writes still queued stay pending (close the stack first).
        """
        async with self._receive:
            async for irp in self._receive:
                await airp.delay(self.write_latency)  # the transfer: device time
                params = irp.current_stack_location.parameters
                assert irp.system_buffer is not None
                self.data[params.byte_offset : params.byte_offset + params.length] = irp.system_buffer
                complete_request(irp, airp.STATUS_SUCCESS, params.length)

    def stop_flusher(self) -> None:
        """Let :meth:`run_flusher` end once the writes already queued are done."""
        self._send.close()
