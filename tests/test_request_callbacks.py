"""Completion callbacks on requests: ``Overlapped.add_done_callback`` / ``remove_done_callback``.

A callback runs once, synchronously, when the request's final stage has run: inside the completion
walk of whoever completes the IRP, before the requester is woken.  Every test runs on asyncio and
trio, each on a virtual clock (conftest).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from _cancel_drivers import HeldReads, make_io

import airp
from airp import (
    STATUS_CANCELLED,
    STATUS_SUCCESS,
    BugCheck,
    DeviceObject,
    Irp,
    IrpMajor,
    NtStatusError,
    Overlapped,
    complete_request,
)
from airp._iomanager._requests import build_read_write_request
from airp._tools._simulate import SimulationRecorder
from airp.testing import VirtualClock, wait_until_quiet

pytestmark = pytest.mark.anyio


class Echo(airp.Driver):
    """Completes every read at once with ``b"x" * length`` (or *claim* bytes if set: 0x312)."""

    def __init__(self, claim: int | None = None) -> None:
        super().__init__("echo")
        self.claim = claim

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLOSE, IrpMajor.CLEANUP)
    async def open_close(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        length = irp.current_stack_location.parameters.length
        irp.user_buffer[:length] = b"x" * length
        complete_request(irp, STATUS_SUCCESS, length if self.claim is None else self.claim)
        return STATUS_SUCCESS


def recorder(log: list[Any], label: str) -> Callable[[Overlapped[Any]], None]:
    def callback(request: Overlapped[Any]) -> None:
        log.append((label, request.done, request.irp.status))

    return callback


async def test_synchronous_completion_calls_back_inside_the_walk() -> None:
    """Completed inside the dispatch routine: the callback runs inside that complete_request call."""
    order: list[str] = []

    class Logged(Echo):
        @airp.dispatch(IrpMajor.READ)
        async def read(self, device: DeviceObject, irp: Irp) -> int:
            irp.user_buffer[:2] = b"hi"
            order.append("completing")
            complete_request(irp, STATUS_SUCCESS, 2)
            order.append("complete_request returned")
            return STATUS_SUCCESS

    io, device = make_io(Logged())
    async with io.open("\\Device\\Test") as handle:
        # Registered before the request is sent, which the public calls cannot do (they return
        # once the dispatch routine has): the I/O manager's own build and send.
        request = build_read_write_request(device, IrpMajor.READ, length=2, file_object=handle.file_object)
        request.add_done_callback(lambda r: order.append(f"callback {r.result()!r}"))
        await io._send(request, device)
        assert order == ["completing", "callback b'hi'", "complete_request returned"]
        assert await request == b"hi"


async def test_synchronous_completion_through_a_handle_calls_back_at_once() -> None:
    """The public calls return a request completed synchronously already done: called at once."""
    io, _ = make_io(Echo())
    async with io.open("\\Device\\Test") as handle:
        request = await handle.read_overlapped(3)
        seen: list[Any] = []
        request.add_done_callback(lambda r: seen.append(r.result()))
        assert seen == [b"xxx"]


async def test_pended_completion_calls_back_in_the_completers_walk(virtual_clock: VirtualClock) -> None:
    """A pended request: the callback runs synchronously in the walk the completer starts."""
    driver = HeldReads()
    io, _ = make_io(driver)
    async with io.open("\\Device\\Test") as handle:
        request = await handle.read_overlapped(4)
        log: list[Any] = []

        def callback(r: Overlapped[bytes]) -> None:
            # The final stage has run: the data is back and the status block written; the
            # requester has not been woken yet (it is not waiting, here).
            log.append((r.done, r.result(), r.io_status_block))

        request.add_done_callback(callback)
        assert log == []
        assert not request.done
        assert driver.push(b"data")  # completes the read: the walk runs the callback in place
        assert len(log) == 1
        done, data, block = log[0]
        assert done
        assert data == b"data"
        assert block is not None
        assert (block.status, block.information) == (STATUS_SUCCESS, 4)
        assert await request == b"data"
        assert len(log) == 1  # called once


async def test_callback_runs_before_the_awaiting_requester_wakes() -> None:
    driver = HeldReads()
    io, _ = make_io(driver)
    order: list[str] = []
    async with io.open("\\Device\\Test") as handle:
        request = await handle.read_overlapped(4)
        request.add_done_callback(lambda r: order.append("callback"))

        async def requester() -> None:
            await request
            order.append("requester")

        async with anyio.create_task_group() as tg:
            tg.start_soon(requester)
            await wait_until_quiet()
            driver.push(b"ab")
            order.append("pushed")
        assert order == ["callback", "pushed", "requester"]


async def test_already_done_calls_at_once_and_only_once() -> None:
    io, _ = make_io(Echo())
    async with io.open("\\Device\\Test") as handle:
        request = await handle.read_overlapped(2)
        assert request.done
        log: list[Any] = []
        request.add_done_callback(recorder(log, "late"))
        assert log == [("late", True, STATUS_SUCCESS)]
        await request
        assert log == [("late", True, STATUS_SUCCESS)]


async def test_callbacks_run_in_order_of_registration() -> None:
    driver = HeldReads()
    io, _ = make_io(driver)
    async with io.open("\\Device\\Test") as handle:
        request = await handle.read_overlapped(4)
        log: list[Any] = []
        first = recorder(log, "first")
        request.add_done_callback(first)
        request.add_done_callback(recorder(log, "second"))
        request.add_done_callback(first)  # the same one twice: called twice

        def adds_another(r: Overlapped[bytes]) -> None:
            log.append(("adder", r.done, r.irp.status))
            r.add_done_callback(recorder(log, "added while running"))

        request.add_done_callback(adds_another)
        request.add_done_callback(recorder(log, "last"))
        driver.push(b"1234")
        assert [label for label, _, _ in log] == ["first", "second", "first", "adder", "last", "added while running"]
        assert all(done for _, done, _ in log)


async def test_remove_done_callback() -> None:
    driver = HeldReads()
    io, _ = make_io(driver)
    async with io.open("\\Device\\Test") as handle:
        request = await handle.read_overlapped(4)
        log: list[Any] = []
        kept = recorder(log, "kept")
        dropped = recorder(log, "dropped")
        assert request.remove_done_callback(dropped) == 0  # none registered yet
        request.add_done_callback(dropped)
        request.add_done_callback(kept)
        request.add_done_callback(dropped)
        assert request.remove_done_callback(dropped) == 2
        assert request.remove_done_callback(dropped) == 0

        def removes_the_next(r: Overlapped[bytes]) -> None:
            log.append(("remover", r.done, r.irp.status))
            assert r.remove_done_callback(dropped) == 1  # not called yet: it can still go

        request.add_done_callback(removes_the_next)
        request.add_done_callback(dropped)
        driver.push(b"abcd")
        assert [label for label, _, _ in log] == ["kept", "remover"]
        # Once the callbacks have run there is nothing left to remove.
        assert request.remove_done_callback(kept) == 0


async def test_remove_keeps_other_callbacks_of_the_same_request() -> None:
    io, _ = make_io(HeldReads())
    async with io.open("\\Device\\Test") as handle:
        request = await handle.read_overlapped(1)
        log: list[Any] = []
        request.add_done_callback(recorder(log, "a"))
        assert request.remove_done_callback(recorder(log, "a")) == 0  # another function object
        await handle.close()  # CLEANUP completes the held read as cancelled
        assert [label for label, _, _ in log] == ["a"]


async def test_a_raising_callback_is_reported_and_the_others_still_run(monkeypatch: pytest.MonkeyPatch) -> None:
    reports: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", reports.append)
    driver = HeldReads()
    io, _ = make_io(driver)
    async with io.open("\\Device\\Test") as handle:
        request = await handle.read_overlapped(4)
        log: list[Any] = []

        def broken(r: Overlapped[bytes]) -> None:
            raise ValueError("callback bug")

        request.add_done_callback(broken)
        request.add_done_callback(recorder(log, "after"))
        assert driver.push(b"ok")  # the completer is not taken down
        assert [label for label, _, _ in log] == ["after"]
        assert await request == b"ok"  # nor is the IRP
        assert request.irp.routine_error is None
        assert len(reports) == 1
        report = reports[0]
        assert report.exc_type is ValueError
        assert str(report.exc_value) == "callback bug"
        assert report.exc_traceback is not None
        assert report.object is broken
        assert report.err_msg == f"Exception ignored in a done callback of READ request {request!r}"

        # Already done: the callback is called at once, and its error reported the same way.
        request.add_done_callback(broken)
        assert len(reports) == 2
        assert reports[1].object is broken


async def test_a_raising_callback_with_the_default_hook_writes_to_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "unraisablehook", sys.__unraisablehook__)
    io, _ = make_io(Echo())
    async with io.open("\\Device\\Test") as handle:
        request = await handle.read_overlapped(1)

        def broken(r: Overlapped[bytes]) -> None:
            raise KeyError("missing")

        request.add_done_callback(broken)
        err = capsys.readouterr().err
        assert f"Exception ignored in a done callback of READ request {request!r}: {broken!r}" in err
        assert "KeyError: 'missing'" in err


async def test_add_done_callback_refuses_what_is_not_callable() -> None:
    io, _ = make_io(Echo())
    async with io.open("\\Device\\Test") as handle:
        request = await handle.read_overlapped(1)
        with pytest.raises(TypeError, match="plain function"):
            request.add_done_callback("not a function")  # type: ignore[arg-type]

        async def coroutine_function(r: Overlapped[bytes]) -> None:
            pass  # pragma: no cover

        def generator_function(r: Overlapped[bytes]) -> Any:
            yield  # pragma: no cover

        class AsyncCall:
            async def __call__(self, r: Overlapped[bytes]) -> None:
                pass  # pragma: no cover

        bad_ones: list[Any] = [
            coroutine_function,
            generator_function,
            functools.partial(coroutine_function),
            functools.partial(functools.partial(generator_function)),
            AsyncCall(),
        ]
        for bad in bad_ones:
            with pytest.raises(TypeError, match="cannot await"):
                request.add_done_callback(bad)
        seen: list[Any] = []
        request.add_done_callback(functools.partial(seen.append))  # a partial of a plain callable
        request.add_done_callback(seen.append)  # a builtin method
        assert seen == [request, request]


async def test_final_stage_bug_check_still_calls_back() -> None:
    """0x312 (information larger than the requester's buffer): the request is done, result() raises it."""
    driver = HeldReads()
    io, _ = make_io(driver)
    async with io.open("\\Device\\Test") as handle:
        request = await handle.read_overlapped(2)
        seen: list[BaseException] = []

        def callback(r: Overlapped[bytes]) -> None:
            assert r.done
            try:
                r.result()
            except BugCheck as error:
                seen.append(error)

        request.add_done_callback(callback)
        irp = driver.queue.remove_next()
        assert irp is request.irp
        with pytest.raises(BugCheck) as completer_saw:
            complete_request(irp, STATUS_SUCCESS, 64)  # the completer gets the bug check
        assert (completer_saw.value.code, completer_saw.value.parameters[0]) == (0xC9, 0x312)
        assert seen == [completer_saw.value]
        with pytest.raises(BugCheck) as requester_saw:
            await request
        assert requester_saw.value is completer_saw.value


async def test_synchronous_final_stage_bug_check_calls_back_already_done() -> None:
    io, _ = make_io(Echo(claim=64))
    async with io.open("\\Device\\Test") as handle:
        with pytest.raises(BugCheck):
            await handle.read(2)


async def test_cancelled_requester_calls_back_with_status_cancelled(virtual_clock: VirtualClock) -> None:
    """The requester's timeout becomes cancel_irp: the callback runs when the driver completes the IRP."""
    driver = HeldReads()
    io, _ = make_io(driver)
    async with io.open("\\Device\\Test") as handle:
        request = await handle.read_overlapped(8)
        log: list[Any] = []
        request.add_done_callback(recorder(log, "done"))
        with anyio.move_on_after(2) as scope:
            await request
        assert scope.cancelled_caught
        assert virtual_clock.now() == pytest.approx(2)
        assert log == [("done", True, STATUS_CANCELLED)]
        with pytest.raises(NtStatusError) as info:
            request.result()
        assert info.value.status == STATUS_CANCELLED


async def test_cancelled_task_calls_back_with_status_cancelled() -> None:
    driver = HeldReads()
    io, _ = make_io(driver)
    log: list[Any] = []
    async with io.open("\\Device\\Test") as handle:

        async def reader() -> None:
            request = await handle.read_overlapped(4)
            request.add_done_callback(recorder(log, "done"))
            await request

        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            await wait_until_quiet()
            assert log == []
            tg.cancel_scope.cancel()
    assert log == [("done", True, STATUS_CANCELLED)]


async def test_callbacks_of_several_requests_count_completions() -> None:
    """The pattern the simulator uses: bookkeeping per request without a task per request."""
    driver = HeldReads()
    io, _ = make_io(driver)
    finished: list[bytes] = []
    async with io.open("\\Device\\Test") as handle:
        for _ in range(5):
            request = await handle.read_overlapped(1)
            request.add_done_callback(lambda r: finished.append(r.result()))
        for byte in b"abcde":
            driver.push(bytes([byte]))
    assert finished == [b"a", b"b", b"c", b"d", b"e"]


def test_a_request_without_callbacks_carries_nothing_for_them() -> None:
    """No memory for callbacks until one is added: no slot, no dict; the result function's slot
    holds the callbacks while there are some, and gets the function back once they have run."""
    device = airp.IoManager().create_device(Echo())
    request = build_read_write_request(device, IrpMajor.READ, length=1)
    assert Overlapped.__slots__ == ("_output", "_result", "io_status_block", "irp", "status_returned")
    assert not hasattr(request, "__dict__")
    function = request._result
    request.add_done_callback(print)
    assert request._result is not function
    assert request.remove_done_callback(print) == 1
    irp = request.irp
    irp._index = irp.stack_count + 1  # completed, as the walk leaves it before the final stage
    irp.information = 1
    request._finish(irp)
    assert request._result is function
    assert request.result() == b"\0"


async def test_the_simulators_recorder_counts_a_request_whose_final_stage_bug_checks() -> None:
    """airp simulate accounts for requests with done callbacks, which run after a 0x312 too:
    the request is counted completed, not lost (the monitor's completed hook never saw it)."""
    statuses: list[Any] = []
    recorder = SimulationRecorder({}, on_done=statuses.append)
    driver = HeldReads()
    io = airp.IoManager(monitor=recorder)
    io.create_device(driver, "\\Device\\Test")
    async with io.open("\\Device\\Test") as handle:
        request = await recorder.send(lambda: handle.read_overlapped(2), "read", True)
        assert request is not None
        assert (recorder.sent, recorder.done, recorder.outstanding) == (1, 0, 1)
        irp = driver.queue.remove_next()
        assert irp is request.irp
        with pytest.raises(BugCheck):
            complete_request(irp, STATUS_SUCCESS, 64)
        assert (recorder.sent, recorder.done, recorder.outstanding) == (1, 1, 0)
        assert statuses == [STATUS_SUCCESS]
        assert [count for count, _ in recorder.latencies["read"]] == [1]
