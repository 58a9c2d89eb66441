"""A filter that splits one large read into associated IRPs (reference 2.5, 5.5).

The disk below transfers at most :data:`MAX_TRANSFER` bytes per request.  The filter above it takes
any read: a small one it passes down untouched; a large one becomes the *master*, carried out by one
*associated* IRP per chunk:

- :func:`airp.make_associated_irps` makes the parts and sets the master's count, all or nothing;
- each part reads into its slice of the requester's buffer (the master's MDL, ``irp.mdl``: the
  devices use direct I/O, so a part's MDL is a partial MDL of the master's);
- each part's completion routine adds its byte count to the master, or stores the first error
  there: the I/O manager completes the master when the last part completes, with the status the
  filter stored, and never aggregates statuses itself;
- :func:`airp.arm_master_cancel` makes cancelling the master cancel the parts still in flight.

The disk pends every request and serves them from a task standing in for its hardware; with
``hold=True`` it keeps them until :meth:`RamDisk.release` (the tests use it to watch the master
complete exactly when its last part does, and to cancel a master while its parts are held).

Run::

    python examples/split_read_associated.py --length 20000 --offset 300
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

import airp
from airp import (
    STATUS_CANCELLED,
    STATUS_CONTINUE_COMPLETION,
    STATUS_END_OF_FILE,
    STATUS_INSUFFICIENT_RESOURCES,
    STATUS_INVALID_PARAMETER,
    STATUS_PENDING,
    STATUS_SUCCESS,
    DeviceObject,
    Irp,
    IrpMajor,
    ReadWriteParameters,
    complete_request,
    nt_success,
)

#: The largest read the disk accepts.
MAX_TRANSFER = 4096
DISK_NAME = "\\Device\\SplitDisk0"


class RamDisk(airp.Driver):
    """A direct-I/O disk that refuses reads larger than :data:`MAX_TRANSFER`.

    Reads are pended with a cancel routine and served by :meth:`hardware`.

    :param content: the disk's bytes.
    :param hold: keep requests until :meth:`release` instead of serving them at once.
    """

    def __init__(self, content: bytes, *, hold: bool = False) -> None:
        super().__init__("ramdisk")
        self.content = content
        self.hold = hold
        self.held: list[Irp] = []
        self.largest_request = 0
        self.served = 0
        self._send: MemoryObjectSendStream[Irp] | None = None
        self._receive: MemoryObjectReceiveStream[Irp] | None = None
        self.request_arrived: anyio.Event | None = None

    def start(self) -> None:
        """Create the request queue (inside the run)."""
        self._send, self._receive = anyio.create_memory_object_stream[Irp](math.inf)
        self.request_arrived = anyio.Event()

    def stop(self) -> None:
        """Close the request queue."""
        for stream in (self._send, self._receive):
            if stream is not None:
                stream.close()

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLEANUP, IrpMajor.CLOSE)
    async def open_close(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        params = irp.current_stack_location.parameters
        self.largest_request = max(self.largest_request, params.length)
        if params.length > MAX_TRANSFER:
            complete_request(irp, STATUS_INVALID_PARAMETER, 0)
            return STATUS_INVALID_PARAMETER
        irp.mark_pending()
        irp.set_cancel_routine(self._cancel)
        if irp.cancel and irp.set_cancel_routine(None) is not None:
            complete_request(irp, STATUS_CANCELLED, 0)  # cancelled before it was armed (6.3)
            return STATUS_PENDING
        if self.hold:
            self.held.append(irp)
        else:
            assert self._send is not None, "call start() first"
            self._send.send_nowait(irp)
        assert self.request_arrived is not None
        self.request_arrived.set()
        return STATUS_PENDING

    def _cancel(self, device: DeviceObject | None, irp: Irp) -> None:
        if irp in self.held:
            self.held.remove(irp)
        complete_request(irp, STATUS_CANCELLED, 0)

    def _serve(self, irp: Irp) -> None:
        if irp.set_cancel_routine(None) is None:
            return  # being cancelled: the cancel routine completes it
        params = irp.current_stack_location.parameters
        data = self.content[params.byte_offset : params.byte_offset + params.length]
        assert irp.mdl is not None
        irp.mdl[: len(data)] = data
        self.served += 1
        complete_request(irp, STATUS_SUCCESS if data else STATUS_END_OF_FILE, len(data))

    def release(self, count: int | None = None) -> int:
        """Serve *count* held requests (all if ``None``), oldest first; returns how many."""
        batch = self.held[:count] if count is not None else list(self.held)
        del self.held[: len(batch)]
        for irp in batch:
            self._serve(irp)
        return len(batch)

    async def hardware(self) -> None:
        """Serve queued requests, until cancelled."""
        assert self._receive is not None, "call start() first"
        async for irp in self._receive:
            self._serve(irp)


def part_done(device: DeviceObject | None, part: Irp, master: Irp) -> int:
    """Completion routine of each part: account it in the master (statuses are not aggregated)."""
    if nt_success(part.status):
        master.information += part.information
    elif nt_success(master.status):
        master.status = part.status  # the first failure decides the master's status
    return STATUS_CONTINUE_COMPLETION  # an associated IRP completes normally: the I/O manager frees it


class Splitter(airp.Driver):
    """The highest-level filter: splits reads larger than the disk's maximum transfer."""

    pass_through = True  # CREATE, CLOSE and the rest go down untouched

    def __init__(self, allocator: airp.IrpAllocator | None = None) -> None:
        super().__init__("splitter")
        self.allocator = allocator
        self.split_reads = 0

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        lower = device.lower_device
        assert lower is not None
        params: ReadWriteParameters = irp.current_stack_location.parameters
        if params.length <= MAX_TRANSFER:
            return await airp.pass_down(device, irp)
        count = -(-params.length // MAX_TRANSFER)
        parts = airp.make_associated_irps(irp, count, lower.stack_size, allocator=self.allocator)
        if parts is None:
            airp.complete_request(irp, STATUS_INSUFFICIENT_RESOURCES, 0)
            return STATUS_INSUFFICIENT_RESOURCES
        self.split_reads += 1
        assert irp.mdl is not None
        # The master's result is what this driver stores: success, and the bytes the parts transfer.
        irp.status = STATUS_SUCCESS
        irp.information = 0
        for number, part in enumerate(parts):
            start = number * MAX_TRANSFER
            length = min(MAX_TRANSFER, params.length - start)
            loc = part.next_stack_location
            loc.major = IrpMajor.READ
            loc.parameters = ReadWriteParameters(length, params.byte_offset + start)
            part.mdl = irp.mdl[start : start + length]  # IoBuildPartialMdl
            part.set_completion_routine(part_done, irp)
        irp.mark_pending()
        airp.arm_master_cancel(irp)
        for part in parts:
            await airp.send_irp(lower, part)
        return STATUS_PENDING


@dataclass
class Stack:
    """The two devices and their drivers."""

    io: airp.IoManager
    disk: RamDisk
    splitter: Splitter
    disk_device: DeviceObject
    top: DeviceObject


def build_stack(content: bytes, *, hold: bool = False, allocator: airp.IrpAllocator | None = None) -> Stack:
    """The disk, named :data:`DISK_NAME`, with the splitter attached on top.  Call inside the run."""
    io = airp.IoManager()
    disk = RamDisk(content, hold=hold)
    disk.start()
    disk_device = io.create_device(disk, DISK_NAME, flags=airp.DeviceFlags.DIRECT_IO)
    splitter = Splitter(allocator)
    top = io.create_device(splitter)
    airp.attach_device(top, disk_device)
    return Stack(io, disk, splitter, disk_device, top)


def disk_content(size: int) -> bytes:
    """Recognisable bytes: each 4-byte group is its own offset / 4, big-endian."""
    return b"".join((i).to_bytes(4, "big") for i in range(-(-size // 4)))[:size]


async def read_split(length: int, offset: int, *, disk_size: int = 65536) -> tuple[bytes, Stack]:
    """Read *length* bytes at *offset* through the splitter; returns the data and the stack."""
    stack = build_stack(disk_content(disk_size))
    try:
        async with anyio.create_task_group() as hardware:
            hardware.start_soon(stack.disk.hardware)
            async with stack.io.open(DISK_NAME) as handle:
                data = await handle.read(length, offset=offset)
            hardware.cancel_scope.cancel()
    finally:
        stack.disk.stop()
    return data, stack


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=20000)
    parser.add_argument("--offset", type=int, default=300)
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    args = parser.parse_args(argv)

    async def go() -> tuple[bytes, Stack]:
        return await read_split(args.length, args.offset)

    data, stack = anyio.run(go, backend=args.backend)
    expected = disk_content(65536)[args.offset : args.offset + args.length]
    print(f"read {len(data)} bytes at {args.offset}: {'correct' if data == expected else 'WRONG'}")
    print(f"the disk served {stack.disk.served} requests of at most {stack.disk.largest_request} bytes"
          f" (its limit is {MAX_TRANSFER}); the splitter split {stack.splitter.split_reads} read(s)")


if __name__ == "__main__":
    main()
