"""Two filter drivers: one that watches results on the way up, one that stays out of the way."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import airp
from airp import IrpMajor


class AuditFilter(airp.Driver):
    """An upper filter that sets a completion routine on reads, writes and device controls.

    The routine runs on the way back up, sees the final status, and propagates the pending mark
    (reference 5.4), which every routine that lets the walk go on must do.  Everything else is
    passed down untouched.

    :param on_result: called with ``(major name, status, information)`` for each watched request.
    """

    pass_through = True

    def __init__(self, on_result: Callable[[str, airp.NtStatus, int], Any] | None = None) -> None:
        super().__init__("audit-filter")
        self.on_result = on_result
        self.seen = 0

    @airp.dispatch(IrpMajor.READ, IrpMajor.WRITE, IrpMajor.DEVICE_CONTROL)
    async def watch(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        assert device.lower_device is not None
        major = IrpMajor(irp.current_stack_location.major).name
        irp.copy_current_stack_location_to_next()
        irp.set_completion_routine(self._on_complete, major)
        return await airp.call_driver(device.lower_device, irp)

    def _on_complete(self, device: airp.DeviceObject | None, irp: airp.Irp, major: str) -> int:
        if irp.pending_returned:
            irp.mark_pending()
        self.seen += 1
        if self.on_result is not None:
            self.on_result(major, airp.NtStatus(irp.status), irp.information)
        return airp.STATUS_CONTINUE_COMPLETION


class PassThroughFilter(airp.Driver):
    """A lower filter that handles nothing: every request is skipped down to the device below."""

    pass_through = True

    def __init__(self) -> None:
        super().__init__("pass-through-filter")
