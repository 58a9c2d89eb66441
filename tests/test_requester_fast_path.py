"""The requester's path pays only for what is in force.

``IoManager._send`` reads the requester's effective deadline once per request through
``airp._shell._requester_cancel.current_effective_deadline``: anyio's answer, with the running backend
found once instead of through sniffio on every call.  These tests hold it to anyio's answer in every
shape of cancel scope, to the behaviour of the requester's boundary, and across backend switches
in one process.
"""

# The scopes below are entered to read the deadline they put in force, not to time anything out:
# most have nothing to await (ASYNC100).
# ruff: noqa: ASYNC100

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from _cancel_drivers import HeldReads, make_io

import airp
import airp._shell._requester_cancel as requests
from airp import STATUS_SUCCESS, DeviceObject, Irp, IrpMajor, complete_request
from airp._shell._requester_cancel import _requester_deadline
from airp.testing import VirtualClock, virtual_anyio_backend

pytestmark = pytest.mark.anyio


def both() -> tuple[float, float]:
    return requests.current_effective_deadline(), anyio.current_effective_deadline()


async def test_no_scope_is_inf() -> None:
    assert both() == (math.inf, math.inf)


async def test_move_on_after_and_fail_after(virtual_clock: VirtualClock) -> None:
    now = anyio.current_time()
    with anyio.move_on_after(5):
        assert both() == (now + 5, now + 5)
        with anyio.fail_after(2):
            assert both() == (now + 2, now + 2)
            with anyio.move_on_after(10):  # the nearest deadline wins
                assert both() == (now + 2, now + 2)


async def test_a_shield_hides_the_deadlines_outside_it(virtual_clock: VirtualClock) -> None:
    now = anyio.current_time()
    with anyio.move_on_after(5), anyio.CancelScope(shield=True):
        assert both() == (math.inf, math.inf)
        with anyio.move_on_after(7):
            assert both() == (now + 7, now + 7)


async def test_a_cancelled_scope_is_minus_inf() -> None:
    with anyio.CancelScope() as scope:
        scope.cancel()
        assert both() == (-math.inf, -math.inf)
        with anyio.CancelScope(shield=True):
            assert both() == (math.inf, math.inf)


async def test_a_deadline_changed_in_place_is_seen(virtual_clock: VirtualClock) -> None:
    now = anyio.current_time()
    with anyio.move_on_after(5) as scope:
        assert both() == (now + 5, now + 5)
        scope.deadline = now + 1
        assert both() == (now + 1, now + 1)
        scope.deadline = math.inf
        assert both() == (math.inf, math.inf)


class Recorder(airp.Driver):
    """Completes reads at once and records the requester's deadline its dispatch routine ran under."""

    def __init__(self) -> None:
        super().__init__("recorder")
        self.deadlines: list[float] = []

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLOSE, IrpMajor.CLEANUP)
    async def open_close(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        self.deadlines.append(_requester_deadline.get())
        complete_request(irp, STATUS_SUCCESS, 1)
        return STATUS_SUCCESS


async def test_the_boundary_gets_the_requesters_deadline(virtual_clock: VirtualClock) -> None:
    driver = Recorder()
    io, _ = make_io(driver)
    async with io.open("\\Device\\Test") as handle:
        now = anyio.current_time()
        await handle.read(1)
        with anyio.fail_after(3):
            await handle.read(1)
        with anyio.move_on_after(3), anyio.CancelScope(shield=True):
            await handle.read(1)
    # No deadline: call_driver directly, the context variable untouched (inf).
    assert driver.deadlines == [math.inf, now + 3, math.inf]


async def test_an_already_cancelled_requester_sends_nothing() -> None:
    driver = HeldReads()
    io, _ = make_io(driver)
    async with io.open("\\Device\\Test") as handle:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await handle.read_overlapped(4)
            pytest.fail("an already cancelled requester must not get a request back")  # pragma: no cover
        assert scope.cancelled_caught
        assert len(driver.queue) == 0
        assert io.outstanding_requests() == []


async def test_a_requester_deadline_still_cancels_the_irp(virtual_clock: VirtualClock) -> None:
    driver = HeldReads()
    io, _ = make_io(driver)
    async with io.open("\\Device\\Test") as handle:
        with pytest.raises(TimeoutError), anyio.fail_after(2):
            await handle.read(4)
        assert virtual_clock.now() == pytest.approx(2)
        assert io.outstanding_requests() == []


def test_outside_a_run_it_raises_as_anyio_does() -> None:
    with pytest.raises(RuntimeError) as ours:
        requests.current_effective_deadline()
    with pytest.raises(RuntimeError) as theirs:
        anyio.current_effective_deadline()
    assert type(ours.value) is type(theirs.value)


def run_on(backend: str, main: Callable[[], Awaitable[Any]]) -> Any:
    name, options = virtual_anyio_backend(backend)
    return anyio.run(main, backend=name, backend_options=options)


def test_backend_switches_between_runs_find_the_backend_again() -> None:
    """The memo of the backend's method is found again when a run of the other backend asks."""

    async def deadlines() -> tuple[float, float, float]:
        with anyio.move_on_after(4):
            inner = requests.current_effective_deadline() - anyio.current_time()
        with anyio.CancelScope() as scope:
            scope.cancel()
            cancelled = requests.current_effective_deadline()
        return requests.current_effective_deadline(), inner, cancelled

    for backend in ("asyncio", "trio", "trio", "asyncio", "trio"):
        assert run_on(backend, deadlines) == (math.inf, 4.0, -math.inf), backend
        assert requests._backend_deadline.__self__ is anyio_backend_class(backend)  # type: ignore[attr-defined]


def anyio_backend_class(backend: str) -> type:
    async def find() -> type:
        return anyio.lowlevel.current_token().backend_class

    found: type = anyio.run(find, backend=backend)
    return found


def test_requests_across_runs_of_both_backends() -> None:
    """One I/O manager and its handle's device used from runs of alternating backends."""
    driver = Recorder()
    io, _ = make_io(driver)

    async def read_twice() -> None:
        async with io.open("\\Device\\Test") as handle:
            assert await handle.read(1) == b"\0"
            with anyio.fail_after(1):
                assert await handle.read(1) == b"\0"

    for backend in ("trio", "asyncio", "trio"):
        run_on(backend, read_twice)
    assert [d == math.inf for d in driver.deadlines] == [True, False] * 3


def test_runs_of_both_backends_at_once_in_two_threads() -> None:
    """Each call answers for its own run even while another thread's run keeps switching the memo."""
    import threading

    results: dict[str, list[float]] = {}

    async def many(name: str) -> None:
        answers = []
        with anyio.move_on_after(1e6):
            for _ in range(2000):
                answers.append(requests.current_effective_deadline() - anyio.current_time())
        results[name] = answers

    threads = [threading.Thread(target=anyio.run, args=(many, backend), kwargs={"backend": backend}) for backend in ("asyncio", "trio")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name in ("asyncio", "trio"):
        assert len(results[name]) == 2000
        assert all(0 < answer <= 1e6 for answer in results[name])
