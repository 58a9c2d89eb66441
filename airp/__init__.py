"""airp: the Windows I/O Request Packet model on coroutines (asyncio and trio, through anyio).

Everything public is re-exported here; the ``_modules`` are private.
"""

from __future__ import annotations

from ._bugcheck import BugCheck as BugCheck
from ._bugcheck import BugCheckCode as BugCheckCode
from ._bugcheck import VerifierCode as VerifierCode
from ._call import call_driver as call_driver
from ._call import pass_down as pass_down
from ._cancel import cancel_irp as cancel_irp
from ._codes import ControlCode as ControlCode
from ._codes import DeviceFlags as DeviceFlags
from ._codes import FileAccess as FileAccess
from ._codes import IrpFlags as IrpFlags
from ._codes import IrpMajor as IrpMajor
from ._codes import PnpMinor as PnpMinor
from ._codes import PowerMinor as PowerMinor
from ._codes import StackControl as StackControl
from ._codes import TransferMethod as TransferMethod
from ._completion import complete_request as complete_request
from ._device import DeviceObject as DeviceObject
from ._device import attach_device as attach_device
from ._device import detach_device as detach_device
from ._device import get_attached_device as get_attached_device
from ._driver import DispatchRoutine as DispatchRoutine
from ._driver import Driver as Driver
from ._driver import dispatch as dispatch
from ._errors import NtStatusError as NtStatusError
from ._file import FileObject as FileObject
from ._iomanager import FileHandle as FileHandle
from ._iomanager import IoManager as IoManager
from ._irp import CancelRoutine as CancelRoutine
from ._irp import CompletionRoutine as CompletionRoutine
from ._irp import DeviceIoControlParameters as DeviceIoControlParameters
from ._irp import Irp as Irp
from ._irp import IrpStateError as IrpStateError
from ._irp import OtherParameters as OtherParameters
from ._irp import ReadWriteParameters as ReadWriteParameters
from ._irp import StackLocation as StackLocation
from ._requests import Overlapped as Overlapped
from ._status import STATUS_ALERTED as STATUS_ALERTED
from ._status import STATUS_BUFFER_OVERFLOW as STATUS_BUFFER_OVERFLOW
from ._status import STATUS_BUFFER_TOO_SMALL as STATUS_BUFFER_TOO_SMALL
from ._status import STATUS_CANCELLED as STATUS_CANCELLED
from ._status import STATUS_CONTINUE_COMPLETION as STATUS_CONTINUE_COMPLETION
from ._status import STATUS_DELETE_PENDING as STATUS_DELETE_PENDING
from ._status import STATUS_DEVICE_NOT_CONNECTED as STATUS_DEVICE_NOT_CONNECTED
from ._status import STATUS_DEVICE_NOT_READY as STATUS_DEVICE_NOT_READY
from ._status import STATUS_DEVICE_REMOVED as STATUS_DEVICE_REMOVED
from ._status import STATUS_DRIVER_CANCEL_TIMEOUT as STATUS_DRIVER_CANCEL_TIMEOUT
from ._status import STATUS_END_OF_FILE as STATUS_END_OF_FILE
from ._status import STATUS_INSUFFICIENT_RESOURCES as STATUS_INSUFFICIENT_RESOURCES
from ._status import STATUS_INVALID_DEVICE_REQUEST as STATUS_INVALID_DEVICE_REQUEST
from ._status import STATUS_INVALID_DEVICE_STATE as STATUS_INVALID_DEVICE_STATE
from ._status import STATUS_INVALID_PARAMETER as STATUS_INVALID_PARAMETER
from ._status import STATUS_IO_TIMEOUT as STATUS_IO_TIMEOUT
from ._status import STATUS_MORE_PROCESSING_REQUIRED as STATUS_MORE_PROCESSING_REQUIRED
from ._status import STATUS_NO_SUCH_DEVICE as STATUS_NO_SUCH_DEVICE
from ._status import STATUS_NOT_FOUND as STATUS_NOT_FOUND
from ._status import STATUS_NOT_IMPLEMENTED as STATUS_NOT_IMPLEMENTED
from ._status import STATUS_NOT_SUPPORTED as STATUS_NOT_SUPPORTED
from ._status import STATUS_OBJECT_NAME_COLLISION as STATUS_OBJECT_NAME_COLLISION
from ._status import STATUS_OBJECT_NAME_NOT_FOUND as STATUS_OBJECT_NAME_NOT_FOUND
from ._status import STATUS_PENDING as STATUS_PENDING
from ._status import STATUS_REPARSE as STATUS_REPARSE
from ._status import STATUS_SUCCESS as STATUS_SUCCESS
from ._status import STATUS_TIMEOUT as STATUS_TIMEOUT
from ._status import STATUS_UNSUCCESSFUL as STATUS_UNSUCCESSFUL
from ._status import STATUS_USER_APC as STATUS_USER_APC
from ._status import STATUS_VERIFY_REQUIRED as STATUS_VERIFY_REQUIRED
from ._status import STATUS_WDF_BUSY as STATUS_WDF_BUSY
from ._status import IoStatus as IoStatus
from ._status import NtStatus as NtStatus
from ._status import nt_error as nt_error
from ._status import nt_information as nt_information
from ._status import nt_success as nt_success
from ._status import nt_warning as nt_warning
from ._tracing import IrpMonitor as IrpMonitor
from ._tracing import TraceRecord as TraceRecord
from ._tracing import format_trace as format_trace
from ._waiting import call_driver_and_wait as call_driver_and_wait
from ._waiting import forward_and_wait as forward_and_wait
from ._waiting import wait_for_irp as wait_for_irp

__version__ = "0.1.0"
