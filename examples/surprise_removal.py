"""Surprise removal under load: a toaster is pulled out of its bus while requests are in flight.

A bus driver reports the devices plugged into it; the PnP manager builds a stack on each and
starts it.  When a device is pulled out, the bus stops reporting it and the PnP manager
surprise-removes its stack: the stack's queues stop, IRP_MN_SURPRISE_REMOVAL goes down, and the
drivers refuse new I/O.  IRP_MN_REMOVE_DEVICE follows once the last handle is closed; then the
drivers wait on their remove locks, detach and delete.  A WDM function driver does its share with a
remove lock around every request::

    NTSTATUS DispatchReadWrite(PDEVICE_OBJECT dev, PIRP Irp) {
        status = IoAcquireRemoveLock(&ext->RemoveLock, Irp);
        if (!NT_SUCCESS(status)) { /* complete with STATUS_DELETE_PENDING */ }
        if (ext->DevicePnPState == SurpriseRemovePending) { /* complete with STATUS_NO_SUCH_DEVICE */ }
        IoMarkIrpPending(Irp); IoStartPacket(dev, Irp, NULL, NULL);
        IoReleaseRemoveLock(&ext->RemoveLock, Irp);
        return STATUS_PENDING;
    }
    case IRP_MN_REMOVE_DEVICE:
        IoSkipCurrentIrpStackLocation(Irp); status = IoCallDriver(ext->NextLowerDriver, Irp);
        IoReleaseRemoveLockAndWait(&ext->RemoveLock, Irp);
        IoDetachDevice(ext->NextLowerDriver); IoDeleteDevice(dev);

The drivers are the ``airp_drivers`` plugins ``toaster-bus``, ``toaster`` (the function driver:
a remove lock per request, a StartIo lane, a byte store) and ``audit-filter`` (an upper filter
counting results on their way up).  Twenty workers, each with its own handle, send 200 writes and
reads between them; after a third have completed the toaster is pulled out.  The account at the end
shows every request completed, with a status, and none lost (the script exits 1 otherwise).

The script runs on ``airp.testing``'s virtual clock (1 ms per transfer), so it takes no real time.

Reference: irp-semantics.md section 8 (8.1 remove locks, 8.2 PnP IRPs and surprise removal) and
10.3; docs/lifecycle.md.

Run it with ``python examples/surprise_removal.py [--backend trio] [--requests N] [--workers W]``.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import anyio

import airp
from airp.testing import virtual_anyio_backend

LATENCY = 0.001
CHUNK = 16


@dataclass
class Account:
    """What happened to the requests."""

    sent: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    bad_reads: int = 0
    lines: list[str] = field(default_factory=list)

    @property
    def completed(self) -> int:
        return sum(self.by_status.values())

    @property
    def lost(self) -> int:
        return self.sent - self.completed


async def run(requests: int = 200, workers: int = 20) -> Account:
    """Build the bus and a toaster, load it, pull it out, and account for every request.

    On cancellation: leaving ``async with io`` removes what is left, shielded.
    """
    account = Account()
    say = account.lines.append
    pull_at = requests // 3
    enough = anyio.Event()
    pulled = anyio.Event()
    async with airp.IoManager() as io:
        bus = io.load_driver("toaster-bus")
        toaster = io.load_driver("toaster", size=CHUNK * workers, latency=LATENCY)
        audit = io.load_driver("audit-filter")
        io.register_stack("toaster", function=toaster, upper_filters=[audit])
        bus_node = await io.add_device("toaster-bus", name=r"\Device\ToasterBus", function=bus)
        await io.start_device(bus_node)
        bus.plug_in("S-0001")
        await io.invalidate_device_relations(bus_node)
        [node] = bus_node.children
        lock = node.devices[1].extension.lock
        start = anyio.current_time()

        def now() -> str:
            return f"{anyio.current_time() - start:6.3f}s"

        layers = " over ".join(device.driver.name for device in reversed(node.devices))
        say(f"{now()}  {node.name} plugged in and {node.state.value} (stack, top first: {layers})")
        handles = [await io.open(node.name) for _ in range(workers)]
        say(f"{now()}  {workers} workers opened a handle each; {requests} requests between them, 1 ms each on one lane")

        async def worker(number: int, handle: airp.FileHandle, count: int) -> None:
            pattern = bytes([65 + number % 26]) * CHUNK
            offset = number * CHUNK
            for n in range(count):
                account.sent += 1
                try:
                    if n % 2 == 0:
                        await handle.write(pattern, offset=offset)
                    else:
                        data = await handle.read(CHUNK, offset=offset)
                        account.bad_reads += data != pattern
                except airp.NtStatusError as error:
                    account.by_status[error.status.name] += 1
                else:
                    account.by_status["STATUS_SUCCESS"] += 1
                if account.completed >= pull_at:
                    enough.set()
            # An application closes its handle once it hears that the device is gone.
            await pulled.wait()
            await handle.close()

        async def puller() -> None:
            await enough.wait()
            in_flight = account.sent - account.completed
            say(f"{now()}  {account.completed} requests completed, {in_flight} in flight: the toaster is pulled out (bus.unplug, invalidate_device_relations)")
            bus.unplug("S-0001")
            await io.invalidate_device_relations(bus_node)
            say(f"{now()}  {node.name} is {node.state.value}; {node.handles} handles still open, so REMOVE waits")
            pulled.set()
            await node.wait_removed()
            say(f"{now()}  the last handle closed: IRP_MN_REMOVE_DEVICE went down; {node.name} is {node.state.value}")

        async with anyio.create_task_group() as tg:
            tg.start_soon(puller)
            share, extra = divmod(requests, workers)
            for number, handle in enumerate(handles):
                tg.start_soon(worker, number, handle, share + (number < extra))

        stats = lock.statistics()
        say("account:")
        say(f"  {'requests sent':<26}{account.sent:5}")
        say(f"  {'completed':<26}{account.completed:5}")
        for status, count in sorted(account.by_status.items()):
            say(f"    {status:<24}{count:5}")
        say(f"  {'lost':<26}{account.lost:5}")
        say(f"  reads that did not return what was written: {account.bad_reads}")
        say(
            f"toaster's remove lock: count {stats.count}, removed {stats.removed}, {stats.acquired} acquisitions,"
            f" {stats.refused} refused, at most {stats.high_water} holders at once"
        )
        seen = ", ".join(f"{major} {status} {count}" for (major, status), count in sorted(audit.results.items()))
        say(f"audit filter saw {audit.seen} results on their way up: {seen}")
        say(f"nodes: {bus_node.name} {bus_node.state.value}, {node.name} {node.state.value}; present: {len(io.device_nodes)}")
    return account


def main(backend: str = "asyncio", *, requests: int = 200, workers: int = 20) -> int:
    """Run the scenario on the virtual clock, print it, and return how many requests were lost.

    :param backend: ``"asyncio"`` or ``"trio"``.
    :param requests: how many requests the workers send between them.
    :param workers: how many workers (each with its own handle).
    :returns: the requests lost (0 unless something is wrong).
    """
    options: dict[str, Any] = virtual_anyio_backend(backend)[1]
    print(f"Surprise removal under load ({backend}, virtual clock):")
    account: Account = anyio.run(run, requests, workers, backend=backend, backend_options=options)
    for line in account.lines:
        print(line)
    return account.lost


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A toaster pulled out of its bus under load; every request accounted for.")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--requests", type=int, default=200, help="requests sent between the workers (default 200)")
    parser.add_argument("--workers", type=int, default=20, help="workers, each with its own handle (default 20)")
    arguments = parser.parse_args()
    sys.exit(1 if main(arguments.backend, requests=arguments.requests, workers=arguments.workers) else 0)
