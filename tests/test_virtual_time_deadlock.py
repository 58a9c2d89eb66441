"""A deadlock on virtual time is an error, not a hang (issue 11).

When every task is blocked and no timer, I/O or worker thread can wake any of them, both virtual
clocks end the run with :class:`airp.testing.VirtualTimeDeadlock`, naming the requests still
outstanding and the device and driver holding each one.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import anyio
import anyio.to_thread
import pytest

import airp
from airp import IrpMajor
from airp.testing import VirtualTimeDeadlock, virtual_clock_for, wait_until_quiet


class ForgetfulDriver(airp.Driver):
    """Pends every read forever, with no cancel routine: nothing will ever complete it."""

    name = "ForgetfulDriver"

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLEANUP, IrpMajor.CLOSE)
    async def open_close(self, device: Any, irp: airp.Irp) -> int:
        airp.complete_request(irp, airp.STATUS_SUCCESS, 0)
        return airp.STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: Any, irp: airp.Irp) -> int:
        irp.mark_pending()
        return airp.STATUS_PENDING


def _run(backend: str, main: Any, **clock_options: Any) -> Any:
    name, options = virtual_clock_for(backend, **clock_options).anyio_backend()
    return anyio.run(main, backend=name, backend_options=options)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_read_never_completed_is_a_deadlock_naming_irp_device_and_driver(backend: str) -> None:
    seen: list[airp.Irp] = []

    async def main() -> None:
        io = airp.IoManager(cancel_wait_limit=5)
        io.create_device(ForgetfulDriver(), "\\Device\\Forgetful")
        async with io.open("\\Device\\Forgetful") as handle:
            request = await handle.read_overlapped(16)
            seen.extend(io.outstanding_requests())
            await request  # no timeout: a real loop would hang here forever

    # the shutdown's cancel is ignored too: the warning comes after the error
    with pytest.warns(airp.DriverCancelTimeoutWarning), pytest.raises(VirtualTimeDeadlock) as caught:
        _run(backend, main)
    error = caught.value
    [irp] = seen
    assert [pair[0] for pair in error.outstanding] == [irp]
    device = error.outstanding[0][1]
    assert device is not None
    assert device.name == "\\Device\\Forgetful"
    message = str(error)
    assert "deadlock on virtual time at t=0.0" in message
    assert repr(irp) in message
    assert "\\Device\\Forgetful" in message
    assert "ForgetfulDriver" in message
    assert error.now == 0.0


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_deadlock_after_time_moved_reports_the_time(backend: str) -> None:
    async def main() -> None:
        await anyio.sleep(42)
        await anyio.Event().wait()  # nothing will ever set it

    with pytest.raises(VirtualTimeDeadlock) as caught:
        _run(backend, main)
    assert caught.value.now == 42
    assert caught.value.outstanding == []
    assert "no request is outstanding" in str(caught.value)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_deadlock_in_a_task_group_child(backend: str) -> None:
    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.Event().wait)
            await anyio.Event().wait()

    # asyncio ends the loop itself; trio raises into the main task's nursery, which cancels the
    # child and re-raises in an exception group.
    try:
        _run(backend, main)
    except VirtualTimeDeadlock:
        found = backend
    except BaseException as error:  # an exception group
        inner = getattr(error, "exceptions", ())
        found = backend if any(isinstance(e, VirtualTimeDeadlock) for e in inner) else repr(error)
    else:
        found = "nothing raised"
    assert found == backend


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_deadlock_error_false_keeps_the_real_wait(backend: str) -> None:
    # With the check off, a run with no timer blocks for real: a socket woken from a thread ends it.
    async def main() -> bytes:
        a, b = socket.socketpair()
        with a, b:
            a.setblocking(False)
            timer = threading.Timer(0.01, b.send, args=(b"x",))
            event = anyio.Event()
            waiter_done: list[bytes] = []

            async def waiter() -> None:
                await event.wait()
                waiter_done.append(b"x")

            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter)
                timer.start()
                await anyio.wait_readable(a)
                event.set()
            timer.join()
            return a.recv(1) + waiter_done[0]

    assert _run(backend, main, deadlock_error=False) == b"xx"


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_worker_thread_taking_real_time_is_not_a_deadlock(backend: str) -> None:
    release = threading.Event()

    def work() -> str:
        release.wait(0.05)  # takes real time, with no timer in the run
        return "done"

    async def main() -> tuple[str, float]:
        result = await anyio.to_thread.run_sync(work)
        return result, anyio.current_time()

    assert _run(backend, main) == ("done", 0.0)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_task_waiting_on_a_real_socket_is_not_a_deadlock(backend: str) -> None:
    async def main() -> bytes:
        a, b = socket.socketpair()  # loopback only
        with a, b:
            a.setblocking(False)
            timer = threading.Timer(0.02, b.send, args=(b"ping",))
            timer.start()
            await anyio.wait_readable(a)  # no timer, no thread the clock sees: only the socket
            timer.join()
            return a.recv(4)

    assert _run(backend, main) == b"ping"


@pytest.mark.anyio
async def test_wait_until_quiet_still_works(virtual_clock: Any) -> None:
    io = airp.IoManager(cancel_wait_limit=5)
    io.create_device(ForgetfulDriver(), "\\Device\\Forgetful")
    handle = await io.open("\\Device\\Forgetful")
    request = await handle.read_overlapped(16)
    await wait_until_quiet()  # everything else blocked and no timer: quiet, not a deadlock
    assert io.outstanding_requests() == [request.irp]
    assert virtual_clock.now() == 0
    with pytest.warns(airp.DriverCancelTimeoutWarning):
        await handle.close()  # cleanup cancels the read; the driver ignores it for 5 s
    assert virtual_clock.now() == 5
