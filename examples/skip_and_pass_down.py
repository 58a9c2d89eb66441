"""Skip the current stack location and pass the IRP down: the filter that does nothing to a request.

A filter driver that has no interest in a request's result gives the lower driver its own stack
location and forgets about the IRP::

    IoSkipCurrentIrpStackLocation(Irp);
    return IoCallDriver(ext->LowerDevice, Irp);

Skipping moves CurrentLocation up by one, and IoCallDriver moves it down again, so the lower driver
receives the very location the filter had (with the completion routine of the driver *above* the
filter, if any).  The filter sets no completion routine and gets no callback; it returns whatever
the lower driver returned, unchanged, and must not touch the IRP afterwards.

In airp the two lines are ``airp.pass_down(device, irp)``, or by hand
``irp.skip_current_stack_location(); await airp.call_driver(device.lower_device, irp)``.  A driver
class with ``pass_through = True`` does it for every major function it has no dispatch routine for.

Reference: irp-semantics.md sections 1.3 (geometry), 4 (IoSkipCurrentIrpStackLocation) and 5.9
(B in the worked example is such a filter).

Run it with ``python examples/skip_and_pass_down.py [--backend trio]``.
"""

from __future__ import annotations

import argparse

import anyio

import airp


class RamDisk(airp.Driver):
    """The function driver at the bottom: a byte array, read and written at once."""

    def __init__(self, size: int) -> None:
        super().__init__("RamDisk")
        self.storage = bytearray(size)

    @airp.dispatch(airp.IrpMajor.CREATE, airp.IrpMajor.CLEANUP, airp.IrpMajor.CLOSE)
    async def open_close(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        airp.complete_request(irp, airp.STATUS_SUCCESS, 0)
        return airp.STATUS_SUCCESS

    @airp.dispatch(airp.IrpMajor.READ, airp.IrpMajor.WRITE)
    async def read_write(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        loc = irp.current_stack_location
        major = airp.IrpMajor(loc.major)
        start, length = loc.parameters.byte_offset, loc.parameters.length
        print(f"  RamDisk: {major.name} of {length} bytes at offset {start}, at stack location {irp.current_location} of {irp.stack_count}")
        assert irp.system_buffer is not None  # buffered I/O: the flag was inherited by the filter
        if major == airp.IrpMajor.WRITE:
            self.storage[start : start + length] = irp.system_buffer[:length]
        else:
            irp.system_buffer[:length] = self.storage[start : start + length]
        airp.complete_request(irp, airp.STATUS_SUCCESS, length)
        return airp.STATUS_SUCCESS


class Counter(airp.Driver):
    """A filter that counts reads and writes and passes everything down untouched."""

    pass_through = True  # CREATE, CLEANUP, CLOSE and the rest are skipped down by airp

    def __init__(self) -> None:
        super().__init__("Counter")
        self.counts: dict[str, int] = {"READ": 0, "WRITE": 0}

    @airp.dispatch(airp.IrpMajor.READ)
    async def read(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        self.counts["READ"] += 1
        print(f"  Counter: READ #{self.counts['READ']} at stack location {irp.current_location}; skipping it down")
        return await airp.pass_down(device, irp)

    @airp.dispatch(airp.IrpMajor.WRITE)
    async def write(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        self.counts["WRITE"] += 1
        print(f"  Counter: WRITE #{self.counts['WRITE']} at stack location {irp.current_location}; skipping it down by hand")
        assert device.lower_device is not None
        irp.skip_current_stack_location()  # IoSkipCurrentIrpStackLocation
        return await airp.call_driver(device.lower_device, irp)  # IoCallDriver


async def run() -> None:
    io = airp.IoManager()
    disk = io.create_device(RamDisk(64), "\\Device\\RamDisk", flags=airp.DeviceFlags.BUFFERED_IO)
    counter = Counter()
    filter_device = io.create_device(counter)
    airp.attach_device(filter_device, disk)
    print(f"stack: Counter (stack_size {filter_device.stack_size}) over RamDisk (stack_size {disk.stack_size})")
    async with io.open("\\Device\\RamDisk") as handle:
        print("write b'skip me' at offset 8:")
        written = await handle.write(b"skip me", offset=8)
        print(f"  -> {written} bytes written")
        print("read 7 bytes at offset 8:")
        data = await handle.read(7, offset=8)
        print(f"  -> {data!r}")
    print(f"Counter counted {counter.counts}; it set no completion routine and was never called back")


def main(backend: str = "asyncio") -> None:
    anyio.run(run, backend=backend)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Skip the current stack location and pass the IRP down.")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    main(parser.parse_args().backend)
