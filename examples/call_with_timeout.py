"""Call a lower driver synchronously, with a timeout that cancels the IRP.

The classic Windows pattern (a driver asks the driver below for something and cannot wait forever)
allocates an IRP, arms a completion routine that only signals an event and returns
STATUS_MORE_PROCESSING_REQUIRED, waits with a timeout, and on expiry cancels the IRP and waits again,
without a timeout, for it to come back::

    irp = IoAllocateIrp(lower->StackSize, FALSE);
    /* fill IoGetNextIrpStackLocation(irp) */
    KeInitializeEvent(&event, NotificationEvent, FALSE);
    IoSetCompletionRoutine(irp, SignalEvent, &event, TRUE, TRUE, TRUE);   /* returns SMPR */
    status = IoCallDriver(lower, irp);
    if (status == STATUS_PENDING) {
        if (KeWaitForSingleObject(&event, Executive, KernelMode, FALSE, &timeout) == STATUS_TIMEOUT) {
            IoCancelIrp(irp);             /* safe: the SMPR routine keeps the IRP ours */
            KeWaitForSingleObject(&event, Executive, KernelMode, FALSE, NULL);
        }
    }
    status = irp->IoStatus.Status;        /* STATUS_CANCELLED is not guaranteed */
    IoFreeIrp(irp);

``airp.call_driver_with_timeout(lower, irp, seconds)`` is that whole pattern, with KMDF's status
rule (WdfRequestSend with a timeout): when the timer wins, the IRP is cancelled and its status
becomes STATUS_IO_TIMEOUT, unless the lower driver finished the request anyway, in which case its
status stands.  The wait after the cancel is bounded by the run's cancel-wait limit.

The sensor below answers after a delay it is told.  It is cancel-safe (its pending requests sit in an
``airp.IrpQueue``) until it is told to be "deaf", when it holds the request without a cancel routine
and finishes the measurement regardless.

The script runs on ``airp.testing``'s virtual clock, so the waits take no real time; pass
``--real-time`` to watch them on the wall clock.

Reference: irp-semantics.md sections 6.7 (timeout-driven cancel of a driver-created IRP), 9.5
(WdfRequestSend with a timeout), 6.1 (IoCancelIrp) and 5.8 (why the creator's routine returns SMPR).

Run it with ``python examples/call_with_timeout.py [--backend trio]``.
"""

from __future__ import annotations

import argparse
from typing import Any

import anyio

import airp
from airp import IrpMajor, complete_request
from airp.testing import virtual_anyio_backend

IOCTL_MEASURE = airp.ControlCode.make(0x22, 0x900, airp.TransferMethod.NEITHER)


class Sensor(airp.Driver):
    """Answers IOCTL_MEASURE after ``delay`` seconds, from its own task."""

    def __init__(self) -> None:
        super().__init__("Sensor")
        self.queue = airp.IrpQueue()
        self.delay = 0.0
        self.deaf = False
        # (due time, IRP, the queue context to take it back with; None for a deaf request)
        self.pending: list[tuple[float, airp.Irp, airp.CsqIrpContext | None]] = []
        self._wake = anyio.Event()

    @airp.dispatch(IrpMajor.DEVICE_CONTROL)
    async def measure(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        context = None
        if self.deaf:
            irp.mark_pending()  # no cancel routine: a cancel goes unnoticed
        else:
            context = airp.CsqIrpContext()
            self.queue.insert(irp, context)
        self.pending.append((anyio.current_time() + self.delay, irp, context))
        self.pending.sort(key=lambda entry: entry[0])
        self._wake.set()
        return airp.STATUS_PENDING

    async def run(self) -> None:
        """The hardware: finishes each measurement when it is due, if it is still queued."""
        while True:
            self._wake = anyio.Event()
            if not self.pending or self.pending[0][0] > anyio.current_time():
                with anyio.move_on_after(self.pending[0][0] - anyio.current_time() if self.pending else float("inf")):
                    await self._wake.wait()
                continue
            _, irp, context = self.pending.pop(0)
            if context is not None and self.queue.remove(context) is None:
                print(f"  {anyio.current_time():4.1f}s sensor: a measurement is due, but its request was cancelled")
                continue
            irp.user_buffer[:2] = (421).to_bytes(2, "little")
            print(f"  {anyio.current_time():4.1f}s sensor: measurement done, completing with STATUS_SUCCESS")
            complete_request(irp, airp.STATUS_SUCCESS, 2)


def build_measure_irp(io: airp.IoManager, lower: airp.DeviceObject) -> airp.Irp:
    irp = io.new_traced_irp(lower.stack_size)
    loc = irp.next_stack_location
    loc.major = IrpMajor.DEVICE_CONTROL
    loc.parameters = airp.DeviceIoControlParameters(IOCTL_MEASURE, 0, 2)
    irp.user_buffer = bytearray(2)
    return irp


async def ask(io: airp.IoManager, lower: airp.DeviceObject, seconds: float) -> None:
    irp = build_measure_irp(io, lower)
    start = anyio.current_time()
    status = await airp.call_driver_with_timeout(lower, irp, seconds)
    took = anyio.current_time() - start
    value = int.from_bytes(irp.user_buffer, "little") if airp.nt_success(status.status) else None
    print(f"  -> {status.status.name} after {took:.1f}s, value={value}, cancel flag={irp.cancel}")


async def run() -> None:
    io = airp.IoManager()
    sensor = Sensor()
    lower = io.create_device(sensor, "\\Device\\Sensor")
    async with anyio.create_task_group() as tg:
        tg.start_soon(sensor.run)

        print("1. the sensor answers in 2s, the caller allows 5s:")
        sensor.delay = 2
        await ask(io, lower, 5)

        print("2. the sensor would take 10s, the caller allows 1s:")
        sensor.delay = 10
        await ask(io, lower, 1)

        print("3. a deaf sensor takes 3s and ignores the cancel at 1s:")
        sensor.deaf = True
        sensor.delay = 3
        await ask(io, lower, 1)

        await anyio.sleep(10)  # the sensor reaches the due time of case 2's request
        tg.cancel_scope.cancel()


def main(backend: str = "asyncio", *, real_time: bool = False) -> None:
    options: dict[str, Any] = {} if real_time else virtual_anyio_backend(backend)[1]
    anyio.run(run, backend=backend, backend_options=options)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Call a lower driver with a timeout that cancels the IRP.")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--real-time", action="store_true", help="wait on the wall clock instead of virtual time")
    arguments = parser.parse_args()
    main(arguments.backend, real_time=arguments.real_time)
