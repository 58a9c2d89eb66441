"""airp: the Windows I/O Request Packet model on coroutines (asyncio and trio, through anyio).

Everything public is re-exported here; the ``_modules`` are private.
"""

from __future__ import annotations

from ._iomanager._build import build_asynchronous_fsd_request as build_asynchronous_fsd_request
from ._iomanager._build import build_device_io_control_request as build_device_io_control_request
from ._iomanager._build import build_synchronous_fsd_request as build_synchronous_fsd_request
from ._iomanager._irppool import IrpPool as IrpPool
from ._iomanager._irppool import IrpPoolReport as IrpPoolReport
from ._iomanager._irppool import IrpPoolStatistics as IrpPoolStatistics
from ._iomanager._manager import FileHandle as FileHandle
from ._iomanager._manager import IoManager as IoManager
from ._iomanager._plugins import DRIVER_ENTRY_POINT_GROUP as DRIVER_ENTRY_POINT_GROUP
from ._iomanager._plugins import available_drivers as available_drivers
from ._iomanager._plugins import load_driver as load_driver
from ._iomanager._pnp import DeviceNode as DeviceNode
from ._iomanager._pnp import DriverSpec as DriverSpec
from ._iomanager._pnp import RemovalVetoed as RemovalVetoed
from ._iomanager._pnp import RootBus as RootBus
from ._iomanager._pnp import StackDescription as StackDescription
from ._iomanager._pnp import UnloadRefused as UnloadRefused
from ._iomanager._requests import Overlapped as Overlapped
from ._machine._allocation import AllocationFlags as AllocationFlags
from ._machine._allocation import AllocatorStatistics as AllocatorStatistics
from ._machine._allocation import IrpAllocator as IrpAllocator
from ._machine._allocation import LookasideStatistics as LookasideStatistics
from ._machine._allocation import LowResourcesSimulation as LowResourcesSimulation
from ._machine._allocation import SimulatedFailure as SimulatedFailure
from ._machine._allocation import allocate_irp as allocate_irp
from ._machine._allocation import free_irp as free_irp
from ._machine._allocation import reuse_irp as reuse_irp
from ._machine._associated import arm_master_cancel as arm_master_cancel
from ._machine._associated import associated_irps as associated_irps
from ._machine._associated import cancel_associated_irps as cancel_associated_irps
from ._machine._associated import cancel_with as cancel_with
from ._machine._associated import make_associated_irp as make_associated_irp
from ._machine._associated import make_associated_irps as make_associated_irps
from ._machine._bugcheck import BugCheck as BugCheck
from ._machine._bugcheck import BugCheckCode as BugCheckCode
from ._machine._bugcheck import VerifierCode as VerifierCode
from ._machine._cancel import cancel_irp as cancel_irp
from ._machine._codes import ControlCode as ControlCode
from ._machine._codes import DeviceFlags as DeviceFlags
from ._machine._codes import FileAccess as FileAccess
from ._machine._codes import IrpFlags as IrpFlags
from ._machine._codes import IrpMajor as IrpMajor
from ._machine._codes import PnpMinor as PnpMinor
from ._machine._codes import PowerMinor as PowerMinor
from ._machine._codes import StackControl as StackControl
from ._machine._codes import TransferMethod as TransferMethod
from ._machine._completion import complete_request as complete_request
from ._machine._csq import CancelSafeQueue as CancelSafeQueue
from ._machine._csq import CsqIrpContext as CsqIrpContext
from ._machine._csq import IrpQueue as IrpQueue
from ._machine._csq import mark_cancelable as mark_cancelable
from ._machine._csq import mark_irp_cancelable as mark_irp_cancelable
from ._machine._csq import unmark_cancelable as unmark_cancelable
from ._machine._csq import unmark_irp_cancelable as unmark_irp_cancelable
from ._machine._device import DeviceObject as DeviceObject
from ._machine._device import attach_device as attach_device
from ._machine._device import delete_device as delete_device
from ._machine._device import detach_device as detach_device
from ._machine._device import get_attached_device as get_attached_device
from ._machine._devqueue import DeviceQueue as DeviceQueue
from ._machine._devqueue import DeviceQueueError as DeviceQueueError
from ._machine._driver import DispatchRoutine as DispatchRoutine
from ._machine._driver import Driver as Driver
from ._machine._driver import dispatch as dispatch
from ._machine._errors import NtStatusError as NtStatusError
from ._machine._file import FileObject as FileObject
from ._machine._irp import CancelRoutine as CancelRoutine
from ._machine._irp import CompletionRoutine as CompletionRoutine
from ._machine._irp import DeviceIoControlParameters as DeviceIoControlParameters
from ._machine._irp import Irp as Irp
from ._machine._irp import IrpStateError as IrpStateError
from ._machine._irp import OtherParameters as OtherParameters
from ._machine._irp import ReadWriteParameters as ReadWriteParameters
from ._machine._irp import StackLocation as StackLocation
from ._machine._pnp import PNP_TRANSITIONS as PNP_TRANSITIONS
from ._machine._pnp import DeviceRelationType as DeviceRelationType
from ._machine._pnp import PnpState as PnpState
from ._machine._pnp import PnpStateError as PnpStateError
from ._machine._pnp import QueryDeviceRelationsParameters as QueryDeviceRelationsParameters
from ._machine._pnp import next_pnp_state as next_pnp_state
from ._machine._pnp import pnp_state_diagram as pnp_state_diagram
from ._machine._status import STATUS_ALERTED as STATUS_ALERTED
from ._machine._status import STATUS_BUFFER_OVERFLOW as STATUS_BUFFER_OVERFLOW
from ._machine._status import STATUS_BUFFER_TOO_SMALL as STATUS_BUFFER_TOO_SMALL
from ._machine._status import STATUS_CANCELLED as STATUS_CANCELLED
from ._machine._status import STATUS_CONTINUE_COMPLETION as STATUS_CONTINUE_COMPLETION
from ._machine._status import STATUS_DELETE_PENDING as STATUS_DELETE_PENDING
from ._machine._status import STATUS_DEVICE_NOT_CONNECTED as STATUS_DEVICE_NOT_CONNECTED
from ._machine._status import STATUS_DEVICE_NOT_READY as STATUS_DEVICE_NOT_READY
from ._machine._status import STATUS_DEVICE_REMOVED as STATUS_DEVICE_REMOVED
from ._machine._status import STATUS_DRIVER_CANCEL_TIMEOUT as STATUS_DRIVER_CANCEL_TIMEOUT
from ._machine._status import STATUS_END_OF_FILE as STATUS_END_OF_FILE
from ._machine._status import STATUS_INSUFFICIENT_RESOURCES as STATUS_INSUFFICIENT_RESOURCES
from ._machine._status import STATUS_INTERNAL_ERROR as STATUS_INTERNAL_ERROR
from ._machine._status import STATUS_INVALID_DEVICE_REQUEST as STATUS_INVALID_DEVICE_REQUEST
from ._machine._status import STATUS_INVALID_DEVICE_STATE as STATUS_INVALID_DEVICE_STATE
from ._machine._status import STATUS_INVALID_PARAMETER as STATUS_INVALID_PARAMETER
from ._machine._status import STATUS_IO_TIMEOUT as STATUS_IO_TIMEOUT
from ._machine._status import STATUS_MORE_PROCESSING_REQUIRED as STATUS_MORE_PROCESSING_REQUIRED
from ._machine._status import STATUS_NO_SUCH_DEVICE as STATUS_NO_SUCH_DEVICE
from ._machine._status import STATUS_NOT_FOUND as STATUS_NOT_FOUND
from ._machine._status import STATUS_NOT_IMPLEMENTED as STATUS_NOT_IMPLEMENTED
from ._machine._status import STATUS_NOT_SUPPORTED as STATUS_NOT_SUPPORTED
from ._machine._status import STATUS_OBJECT_NAME_COLLISION as STATUS_OBJECT_NAME_COLLISION
from ._machine._status import STATUS_OBJECT_NAME_NOT_FOUND as STATUS_OBJECT_NAME_NOT_FOUND
from ._machine._status import STATUS_PENDING as STATUS_PENDING
from ._machine._status import STATUS_REPARSE as STATUS_REPARSE
from ._machine._status import STATUS_SUCCESS as STATUS_SUCCESS
from ._machine._status import STATUS_TIMEOUT as STATUS_TIMEOUT
from ._machine._status import STATUS_UNSUCCESSFUL as STATUS_UNSUCCESSFUL
from ._machine._status import STATUS_USER_APC as STATUS_USER_APC
from ._machine._status import STATUS_VERIFY_REQUIRED as STATUS_VERIFY_REQUIRED
from ._machine._status import STATUS_WDF_BUSY as STATUS_WDF_BUSY
from ._machine._status import IoStatus as IoStatus
from ._machine._status import NtStatus as NtStatus
from ._machine._status import nt_error as nt_error
from ._machine._status import nt_information as nt_information
from ._machine._status import nt_success as nt_success
from ._machine._status import nt_warning as nt_warning
from ._shell._call import call_driver as call_driver
from ._shell._call import pass_down as pass_down
from ._shell._device_tasks import DeviceRoutineError as DeviceRoutineError
from ._shell._device_tasks import DeviceState as DeviceState
from ._shell._device_tasks import DeviceTasks as DeviceTasks
from ._shell._device_tasks import RoutineFailure as RoutineFailure
from ._shell._device_tasks import device_tasks as device_tasks
from ._shell._device_tasks import run_device as run_device
from ._shell._device_tasks import wait_or_cancelled as wait_or_cancelled
from ._shell._kmdf_queue import DispatchType as DispatchType
from ._shell._kmdf_queue import IoHandler as IoHandler
from ._shell._kmdf_queue import IoQueue as IoQueue
from ._shell._kmdf_queue import QueueState as QueueState
from ._shell._kmdf_queue import Request as Request
from ._shell._remove_lock import RemoveLock as RemoveLock
from ._shell._remove_lock import RemoveLockHold as RemoveLockHold
from ._shell._remove_lock import RemoveLockStatistics as RemoveLockStatistics
from ._shell._remove_lock import RemoveLockViolation as RemoveLockViolation
from ._shell._requester_cancel import DEFAULT_CANCEL_WAIT_LIMIT as DEFAULT_CANCEL_WAIT_LIMIT
from ._shell._requester_cancel import DriverCancelTimeoutError as DriverCancelTimeoutError
from ._shell._requester_cancel import DriverCancelTimeoutWarning as DriverCancelTimeoutWarning
from ._shell._requester_cancel import TaskIo as TaskIo
from ._shell._requester_cancel import current_task_io as current_task_io
from ._shell._requester_cancel import get_cancel_wait_limit as get_cancel_wait_limit
from ._shell._requester_cancel import is_disowned as is_disowned
from ._shell._requester_cancel import set_cancel_wait_limit as set_cancel_wait_limit
from ._shell._requester_cancel import task_io as task_io
from ._shell._send import send_irp as send_irp
from ._shell._startio import StartIoQueue as StartIoQueue
from ._shell._startio import StartIoRoutine as StartIoRoutine
from ._shell._startio import complete_and_start_next as complete_and_start_next
from ._shell._startio import device_queue as device_queue
from ._shell._startio import set_start_io_attributes as set_start_io_attributes
from ._shell._startio import start_io_cancel_routine as start_io_cancel_routine
from ._shell._startio import start_next_packet as start_next_packet
from ._shell._startio import start_next_packet_by_key as start_next_packet_by_key
from ._shell._startio import start_packet as start_packet
from ._shell._timeouts import call_driver_with_timeout as call_driver_with_timeout
from ._shell._timeouts import forward_with_timeout as forward_with_timeout
from ._shell._waiting import call_driver_and_wait as call_driver_and_wait
from ._shell._waiting import forward_and_wait as forward_and_wait
from ._shell._waiting import wait_for_irp as wait_for_irp
from ._tools._simulate import SimulationReport as SimulationReport
from ._tools._simulate import simulate as simulate
from ._tools._simulate_description import SimulationDescription as SimulationDescription
from ._tools._simulate_description import SimulationDescriptionError as SimulationDescriptionError
from ._tools._simulate_description import load_simulation as load_simulation
from ._tools._simulate_description import parse_simulation as parse_simulation
from ._tools._timeline import draw_timeline as draw_timeline
from ._tools._trace_export import chrome_trace as chrome_trace
from ._tools._trace_export import write_chrome_trace as write_chrome_trace
from ._tools._tracing import IrpMonitor as IrpMonitor
from ._tools._tracing import LayerSpan as LayerSpan
from ._tools._tracing import LayerTiming as LayerTiming
from ._tools._tracing import QueueWait as QueueWait
from ._tools._tracing import TraceRecord as TraceRecord
from ._tools._tracing import format_trace as format_trace
from ._tools._verifier import OutstandingIrp as OutstandingIrp
from ._tools._verifier import VerificationFailed as VerificationFailed
from ._tools._verifier import Verifier as Verifier
from ._tools._verifier import VerifierStatistics as VerifierStatistics
from ._tools._verifier import VerifierViolation as VerifierViolation
from ._version import __version__ as __version__


def _install_simulation_clocks() -> None:
    # airp simulate runs on the virtual clocks of airp.testing, a layer above the tools, so the
    # front hands them down, as the shell installs its hooks into the machine.
    from ._tools._simulate import install_virtual_time
    from .testing._clock import VirtualTimeDeadlock, virtual_anyio_backend

    install_virtual_time(virtual_anyio_backend, (VirtualTimeDeadlock,))


_install_simulation_clocks()
del _install_simulation_clocks

