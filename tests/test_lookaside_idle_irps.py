"""An IRP idle on a lookaside list keeps nothing else alive.

``free_irp`` puts a lookaside-sized IRP back on its allocator's list, where it waits until it is
handed out again, which may be never.  It used to wait with its stack locations as they were: the
devices it last went through, the completion routines and their contexts (the request a driver's
own IRP served), and send_irp's record of the creator's routine.  Idle IRPs thus kept removed
device stacks alive (the fault harness saw a few removed toaster stacks survive at rest).  Freed
to a list, an IRP now drops those references; what it needs to be diagnosed if it is completed
again after its free stays, so that is still bug check 0x44.
"""

from __future__ import annotations

import gc
import weakref
from typing import Any

import anyio
import pytest
from _own_irp_drivers import Completer, Holder, fill_read, must

import airp
from airp import (
    STATUS_CONTINUE_COMPLETION,
    STATUS_MORE_PROCESSING_REQUIRED,
    STATUS_SUCCESS,
    BugCheck,
    BugCheckCode,
    DeviceObject,
    Irp,
    IrpMajor,
    complete_request,
)

pytestmark = pytest.mark.anyio


class Witness:
    """Something a completion routine is given as its context (the request it serves, say)."""


class Filter(airp.Driver):
    """Forwards every read with a completion routine whose context is a fresh :class:`Witness`."""

    def __init__(self) -> None:
        super().__init__("filter")
        self.contexts: list[weakref.ref[Witness]] = []

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        lower = device.lower_device
        assert lower is not None
        witness = Witness()
        self.contexts.append(weakref.ref(witness))
        irp.copy_current_stack_location_to_next()
        irp.set_completion_routine(self.done, witness)
        return await airp.call_driver(lower, irp)

    @staticmethod
    def done(device: DeviceObject | None, irp: Irp, context: Any) -> int:
        if irp.pending_returned:
            irp.mark_pending()
        return STATUS_CONTINUE_COMPLETION


async def send_one_and_free(allocator: airp.IrpAllocator) -> tuple[list[weakref.ref[Any]], Filter]:
    """Build a two-device stack, send it a read of an IRP of the creator's own, free it, delete the stack."""
    filter_driver = Filter()
    bottom = DeviceObject(Completer())
    top = DeviceObject(filter_driver)
    airp.attach_device(top, bottom)
    served = Witness()  # what the creator's IRP was serving
    own = fill_read(must(airp.allocate_irp(top.stack_size, allocator=allocator)))

    def creator_done(device: DeviceObject | None, irp: Irp, context: Any) -> int:
        assert context is served
        airp.free_irp(irp)
        return STATUS_MORE_PROCESSING_REQUIRED

    own.set_completion_routine(creator_done, served)
    await airp.send_irp(top, own)
    await anyio.sleep(1)  # a call forced pending completes on a later turn
    assert allocator.statistics().large.depth == 1  # the IRP waits on the list
    airp.detach_device(bottom)
    airp.delete_device(top)
    airp.delete_device(bottom)
    return [weakref.ref(top), weakref.ref(bottom), weakref.ref(served), weakref.ref(creator_done)], filter_driver


@pytest.mark.parametrize("watched", [False, True], ids=["plain", "verifier"])
async def test_an_idle_irp_on_a_lookaside_list_keeps_no_device_or_context_alive(watched: bool) -> None:
    # Watched by a verifier that forces every call pending, the IRP also carries the notes
    # airp's diagnostics keep in it (the dispatch routine whose return it contradicts, ...).
    allocator = airp.IrpAllocator(monitor=airp.Verifier(force_pending=1.0) if watched else None)
    refs, filter_driver = await send_one_and_free(allocator)
    gc.collect()
    # The stack was deleted and nobody else holds it: the idle IRP does not either.
    assert [ref() for ref in refs] == [None] * 4
    assert [ref() for ref in filter_driver.contexts] == [None]
    assert allocator.statistics().large.depth == 1


async def test_an_irp_handed_out_again_from_the_list_is_fresh_and_works() -> None:
    allocator = airp.IrpAllocator()
    await send_one_and_free(allocator)
    device = DeviceObject(Completer())
    again = must(airp.allocate_irp(2, allocator=allocator))
    assert allocator.statistics().large.depth == 0  # it is the one that was idle
    assert all(location.device is None and location.completion_routine is None for location in again._stack)
    fill_read(again)
    status, _ = await airp.call_driver_and_wait(device, again)
    assert status == STATUS_SUCCESS
    airp.free_irp(again)


async def test_a_second_completion_of_an_irp_freed_to_a_lookaside_list_is_still_0x44() -> None:
    allocator = airp.IrpAllocator()
    holder = Holder(cancelable=False)
    lower = DeviceObject(holder)
    own = fill_read(must(airp.allocate_irp(lower.stack_size, allocator=allocator)))
    back: list[int] = []

    def keep_and_free(device: DeviceObject | None, irp: Irp, context: Any) -> int:
        back.append(irp.status)
        airp.free_irp(irp)  # onto the small list
        return STATUS_MORE_PROCESSING_REQUIRED

    own.set_completion_routine(keep_and_free)
    await airp.send_irp(lower, own)
    await anyio.sleep(1)
    complete_request(own, STATUS_SUCCESS, 0)  # the lower driver, once
    assert allocator.statistics().small.depth == 1
    with pytest.raises(BugCheck) as caught:
        complete_request(own, STATUS_SUCCESS, 0)  # and again, on the idle IRP
    assert caught.value.code == BugCheckCode.MULTIPLE_IRP_COMPLETE_REQUESTS
    assert "freed" in str(caught.value)
    assert back == [STATUS_SUCCESS]
