"""The public surface of airp's cancellation support, gathered for ``airp/__init__.py``.

* :mod:`airp._cancel`: ``cancel_irp`` (reference 6.1), re-exported directly by ``airp``;
* :mod:`airp._csq`: the arm-then-re-check helpers and cancel-safe queues (6.3, 6.4);
* :mod:`airp._requester`: the bounded wait after cancel, disowning, the task as thread (6.6);
* :mod:`airp._timeouts`: sending an IRP with a timeout (6.7, 9.5).
"""

from __future__ import annotations

from ._csq import CancelSafeQueue as CancelSafeQueue
from ._csq import CsqIrpContext as CsqIrpContext
from ._csq import IrpQueue as IrpQueue
from ._csq import mark_cancelable as mark_cancelable
from ._csq import unmark_cancelable as unmark_cancelable
from ._requester import DEFAULT_CANCEL_WAIT_LIMIT as DEFAULT_CANCEL_WAIT_LIMIT
from ._requester import DriverCancelTimeoutError as DriverCancelTimeoutError
from ._requester import DriverCancelTimeoutWarning as DriverCancelTimeoutWarning
from ._requester import TaskIo as TaskIo
from ._requester import current_task_io as current_task_io
from ._requester import get_cancel_wait_limit as get_cancel_wait_limit
from ._requester import is_disowned as is_disowned
from ._requester import set_cancel_wait_limit as set_cancel_wait_limit
from ._requester import task_io as task_io
from ._timeouts import call_driver_with_timeout as call_driver_with_timeout
from ._timeouts import forward_with_timeout as forward_with_timeout

__all__ = [
    "DEFAULT_CANCEL_WAIT_LIMIT",
    "CancelSafeQueue",
    "CsqIrpContext",
    "DriverCancelTimeoutError",
    "DriverCancelTimeoutWarning",
    "IrpQueue",
    "TaskIo",
    "call_driver_with_timeout",
    "current_task_io",
    "forward_with_timeout",
    "get_cancel_wait_limit",
    "is_disowned",
    "mark_cancelable",
    "set_cancel_wait_limit",
    "task_io",
    "unmark_cancelable",
]
