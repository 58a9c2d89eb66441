"""A tool never takes an IRP down with it.

An :class:`airp.IrpMonitor` runs the ``include=`` predicate and the ``logger=`` it was given, and a
:class:`airp.Verifier` the ``clock=`` it was given, inside ``call_driver`` and the completion walk.
When one of them raises, the request still completes with its driver's answer, nothing is left in
``outstanding_requests()``, closing the handle does not wait for a cancel that nobody can answer,
and the failure is kept on the tool (``errors``) and reported through ``sys.unraisablehook``
(a ``PytestUnraisableExceptionWarning`` under pytest).  These tests catch that report themselves.
"""

from __future__ import annotations

import sys
from typing import Any

import anyio
import pytest

import airp
from airp import IrpMajor

pytestmark = pytest.mark.anyio

NAME = "\\Device\\Store"


class Store(airp.Driver):
    """Completes every request at once; reads with 3 bytes of b"abc"."""

    def __init__(self) -> None:
        super().__init__("Store")

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLEANUP, IrpMajor.CLOSE)
    async def open_close(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        airp.complete_request(irp, airp.STATUS_SUCCESS, 0)
        return airp.STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        assert irp.system_buffer is not None
        irp.system_buffer[:3] = b"abc"
        airp.complete_request(irp, airp.STATUS_SUCCESS, 3)
        return airp.STATUS_SUCCESS


class Pass(airp.Driver):
    """A filter that passes everything down."""

    pass_through = True

    def __init__(self) -> None:
        super().__init__("Pass")


class Reports:
    """Stands in for ``sys.unraisablehook`` and keeps what it is given."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def __call__(self, report: Any) -> None:
        self.seen.append(report)


@pytest.fixture
def reports(monkeypatch: pytest.MonkeyPatch) -> Reports:
    collector = Reports()
    monkeypatch.setattr(sys, "unraisablehook", collector)
    return collector


def build(**options: Any) -> airp.IoManager:
    io = airp.IoManager(**options)
    bottom = io.create_device(Store(), NAME, flags=airp.DeviceFlags.BUFFERED_IO)
    airp.attach_device(io.create_device(Pass()), bottom)
    return io


class UserCodeError(Exception):
    """What the user's code raises."""


def broken_include(record: airp.TraceRecord) -> bool:
    raise UserCodeError("the predicate fails")


class BrokenLogger:
    def info(self, event: str, **fields: Any) -> None:
        raise UserCodeError("the log sink is down")


def broken_clock() -> float:
    raise UserCodeError("the clock fails")


async def read_twice(io: airp.IoManager) -> list[bytes]:
    """Two reads on one handle; the block must end without waiting on virtual time."""
    start = anyio.current_time()
    async with io.open(NAME) as handle:
        got = [await handle.read(3), await handle.read(3)]
    assert io.outstanding_requests() == []
    # Closing did not wait for a cancel that nobody answers (the cancel-wait limit).
    assert anyio.current_time() == start
    return got


@pytest.mark.parametrize("option", ["include", "logger"])
async def test_a_raising_monitor_hook_leaves_the_request_to_complete(option: str, reports: Reports) -> None:
    monitor = airp.IrpMonitor(**{"include": broken_include} if option == "include" else {"logger": BrokenLogger()})
    io = build(monitor=monitor)
    assert await read_twice(io) == [b"abc", b"abc"]
    # One failure per IRP (CREATE, two READs, CLEANUP, CLOSE): the monitor stopped watching each.
    assert len(monitor.errors) == 5
    failure = monitor.errors[0]
    assert isinstance(failure.__cause__, UserCodeError)
    assert "stopped watching that IRP" in str(failure)
    assert failure.hook == "dispatching"
    # Reported once where a user sees it.
    assert len(reports.seen) == 1
    assert reports.seen[0].exc_value is failure
    assert "IrpMonitor" in reports.seen[0].err_msg


async def test_a_raising_verifier_clock_leaves_the_request_to_complete(reports: Reports) -> None:
    verifier = airp.Verifier(clock=broken_clock)
    io = build(verifier=verifier)
    assert await read_twice(io) == [b"abc", b"abc"]
    # The clock is replaced by the run's clock for good: one failure, and verification goes on.
    assert len(verifier.errors) == 1
    assert isinstance(verifier.errors[0].__cause__, UserCodeError)
    assert verifier.statistics().irps_watched == 5
    assert verifier.outstanding() == []
    assert len(reports.seen) == 1
    with pytest.raises(airp.VerificationFailed, match="clock"):
        verifier.check()


async def test_the_verifier_keeps_checking_an_irp_the_monitor_gave_up(reports: Reports) -> None:
    """A monitor and a verifier on one IRP: the monitor's failure sets only the monitor aside."""

    class Liar(airp.Driver):
        """When told to lie, completes with SUCCESS and returns another status (0x224)."""

        lie = False

        def __init__(self) -> None:
            super().__init__("Liar")

        @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLEANUP, IrpMajor.CLOSE, IrpMajor.READ)
        async def any(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
            airp.complete_request(irp, airp.STATUS_SUCCESS, 0)
            return airp.STATUS_INVALID_DEVICE_REQUEST if self.lie else airp.STATUS_SUCCESS

    monitor = airp.IrpMonitor(include=broken_include)
    verifier = airp.Verifier()
    io = airp.IoManager(monitor=monitor, verifier=verifier)
    liar = Liar()
    io.create_device(liar, NAME, flags=airp.DeviceFlags.BUFFERED_IO)
    async with io.open(NAME) as handle:
        liar.lie = True
        with pytest.raises(airp.BugCheck) as caught:
            await handle.read(1)
        liar.lie = False
    assert caught.value.verifier_code == airp.VerifierCode.DISPATCH_STATUS_MISMATCH
    assert io.outstanding_requests() == []
    assert monitor.errors
    assert reports.seen


async def test_a_monitor_whose_hooks_work_reports_nothing(reports: Reports) -> None:
    monitor = airp.IrpMonitor(include=lambda record: True, logger=None)
    io = build(monitor=monitor)
    assert await read_twice(io) == [b"abc", b"abc"]
    assert monitor.errors == []
    assert reports.seen == []
    assert monitor.records
