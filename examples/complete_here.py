"""Complete an IRP in its dispatch routine: the simplest Windows idiom.

A driver that can satisfy a request at once fills in the IRP's IoStatus, calls IoCompleteRequest and
returns the same status from its dispatch routine::

    Irp->IoStatus.Status = STATUS_SUCCESS;
    Irp->IoStatus.Information = length;
    IoCompleteRequest(Irp, IO_NO_INCREMENT);
    return STATUS_SUCCESS;

In airp a dispatch routine is an ``async def`` method declared with ``@airp.dispatch``, and
``airp.complete_request(irp, status, information)`` is IoCompleteRequest: a plain synchronous call.
Because nothing pends, the request never touches the event loop: the requester's ``await`` comes
back without a checkpoint, on the requester's own task.  A control code the driver does not know is
failed with STATUS_INVALID_DEVICE_REQUEST, which the requester sees as ``airp.NtStatusError``.

Reference: irp-semantics.md sections 3 (IoCallDriver) and 5 (IoCompleteRequest).

Run it with ``python examples/complete_here.py [--backend trio]``.
"""

from __future__ import annotations

import argparse

import anyio

import airp

GREETING = b"hello from the driver"
#: CTL_CODE(FILE_DEVICE_UNKNOWN, 0x800, METHOD_BUFFERED, FILE_ANY_ACCESS): a vendor control code.
IOCTL_UPPER = airp.ControlCode.make(0x22, 0x800, airp.TransferMethod.BUFFERED)
IOCTL_UNKNOWN = airp.ControlCode.make(0x22, 0x801, airp.TransferMethod.BUFFERED)


class Greeter(airp.Driver):
    """Answers every request at once, inside its dispatch routine."""

    def __init__(self) -> None:
        super().__init__("Greeter")
        self.seen: list[str] = []

    @airp.dispatch(airp.IrpMajor.CREATE, airp.IrpMajor.CLEANUP, airp.IrpMajor.CLOSE)
    async def open_close(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        self.seen.append(airp.IrpMajor(irp.current_stack_location.major).name)
        airp.complete_request(irp, airp.STATUS_SUCCESS, 0)
        return airp.STATUS_SUCCESS

    @airp.dispatch(airp.IrpMajor.READ)
    async def read(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        self.seen.append("READ")
        length = min(irp.current_stack_location.parameters.length, len(GREETING))
        assert irp.system_buffer is not None  # DO_BUFFERED_IO: the I/O manager's private copy
        irp.system_buffer[:length] = GREETING[:length]
        airp.complete_request(irp, airp.STATUS_SUCCESS, length)
        return airp.STATUS_SUCCESS

    @airp.dispatch(airp.IrpMajor.DEVICE_CONTROL)
    async def device_control(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        self.seen.append("DEVICE_CONTROL")
        params = irp.current_stack_location.parameters
        if params.io_control_code != IOCTL_UPPER:
            airp.complete_request(irp, airp.STATUS_INVALID_DEVICE_REQUEST, 0)
            return airp.STATUS_INVALID_DEVICE_REQUEST
        assert irp.system_buffer is not None  # METHOD_BUFFERED: input in, output out, same buffer
        data = bytes(irp.system_buffer[: params.input_buffer_length]).upper()
        count = min(len(data), params.output_buffer_length)
        irp.system_buffer[:count] = data[:count]
        airp.complete_request(irp, airp.STATUS_SUCCESS, count)
        return airp.STATUS_SUCCESS


async def run() -> None:
    io = airp.IoManager()
    driver = Greeter()
    io.create_device(driver, "\\Device\\Greeter", flags=airp.DeviceFlags.BUFFERED_IO)
    async with io.open("\\Device\\Greeter") as handle:
        print("opened \\Device\\Greeter")
        data = await handle.read(5)
        print(f"read {len(data)} bytes: {data!r}")
        request = await handle.read_overlapped(64)
        assert request.status_returned is not None
        print(f"a second read: dispatch returned {request.status_returned.name}, done={request.done} (completed before dispatch returned)")
        print(f"  result: {await request!r}")
        print(f"IOCTL_UPPER(b'quiet please') -> {await handle.device_control(IOCTL_UPPER, b'quiet please', 32)!r}")
        try:
            await handle.device_control(IOCTL_UNKNOWN, b"", 0)
        except airp.NtStatusError as error:
            print(f"unknown IOCTL failed with {error.status.name}")
    print(f"closed; the driver saw: {', '.join(driver.seen)}")


def main(backend: str = "asyncio") -> None:
    anyio.run(run, backend=backend)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Complete an IRP in its dispatch routine.")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    main(parser.parse_args().backend)
