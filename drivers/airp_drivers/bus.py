"""A bus driver's physical device object: the bottom of the demo stack."""

from __future__ import annotations

import airp
from airp import IrpMajor, complete_request

#: Returns the device serial number as ASCII (METHOD_BUFFERED).
IOCTL_BUS_GET_SERIAL = airp.ControlCode.make(0x8001, 0x801)


class DemoBus(airp.Driver):
    """Answers IOCTL_BUS_GET_SERIAL and fails every other request it receives.

    :param serial: what IOCTL_BUS_GET_SERIAL returns.
    """

    IOCTL_GET_SERIAL = IOCTL_BUS_GET_SERIAL

    def __init__(self, serial: bytes = b"AIRP-0001") -> None:
        super().__init__("demo-bus")
        self.serial = serial

    @airp.dispatch(IrpMajor.DEVICE_CONTROL)
    async def device_control(self, device: airp.DeviceObject, irp: airp.Irp) -> int:
        params = irp.current_stack_location.parameters
        if params.io_control_code != IOCTL_BUS_GET_SERIAL:
            complete_request(irp, airp.STATUS_INVALID_DEVICE_REQUEST, 0)
            return airp.STATUS_INVALID_DEVICE_REQUEST
        count = min(len(self.serial), params.output_buffer_length)
        assert irp.system_buffer is not None
        irp.system_buffer[:count] = self.serial[:count]
        status = airp.STATUS_SUCCESS if count == len(self.serial) else airp.STATUS_BUFFER_OVERFLOW
        complete_request(irp, status, count)
        return status
