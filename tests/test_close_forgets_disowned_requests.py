"""A handle closed while a request it sent is held by a driver that ignores cancellation: the
request is disowned past the cancel-wait limit, and when the driver completes it at last, the I/O
manager forgets the closed file object (it kept it, with its device stack, for good)."""

from __future__ import annotations

import weakref

import pytest
from _cancel_drivers import Deaf

import airp
from airp import STATUS_SUCCESS, complete_request

pytestmark = pytest.mark.anyio


async def test_a_closed_file_is_forgotten_when_its_disowned_request_completes() -> None:
    driver = Deaf()
    io = airp.IoManager(cancel_wait_limit=5)
    io.create_device(driver, "\\Device\\Deaf")
    handle = await io.open("\\Device\\Deaf")
    file_object = weakref.ref(handle.file_object)
    request = await handle.read_overlapped(4)
    with pytest.warns(airp.DriverCancelTimeoutWarning):
        await handle.close()
    assert file_object() in io._files  # still outstanding: kept, so that it can be reported
    [irp] = driver.held
    complete_request(irp, STATUS_SUCCESS, 0)
    assert request.done
    assert io.outstanding_requests() == []
    assert file_object() not in io._files
