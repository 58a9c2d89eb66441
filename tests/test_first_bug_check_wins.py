"""The first bug check is the one the caller sees; a follow-on is chained to it.

A routine that raises has the IRP it held completed by airp with STATUS_INTERNAL_ERROR.  When that
IRP is a driver's own and its creator kept no routine returning STATUS_MORE_PROCESSING_REQUIRED,
that completion reaches the IRP's final stage, which raises 0x2A (reference 5.8).  The caller must
still see what the driver did first (0x35, 0xC9 / 0x06, ...), with the 0x2A kept as its
``follow_on``.  And a lower driver that completes a driver-allocated IRP twice is a 0x44 naming
it, not a 0x2A blaming a creator that did nothing wrong.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
from _own_irp_drivers import Completer, Holder, fill_read, must

import airp
from airp import (
    STATUS_CONTINUE_COMPLETION,
    STATUS_INTERNAL_ERROR,
    STATUS_MORE_PROCESSING_REQUIRED,
    STATUS_PENDING,
    STATUS_SUCCESS,
    STATUS_UNSUCCESSFUL,
    BugCheck,
    BugCheckCode,
    DeviceObject,
    Irp,
    IrpMajor,
    VerifierCode,
    complete_request,
)

pytestmark = pytest.mark.anyio

INCONSISTENT_IRP = BugCheckCode.INCONSISTENT_IRP


class Creator(airp.Driver):
    """Serves each read with an IRP of its own sent to ``target`` with plain ``call_driver``.

    Its one bug: the routine it sets on its own IRP returns STATUS_CONTINUE_COMPLETION (no routine
    that keeps the IRP), so any completion of that IRP reaches the final stage (0x2A).
    """

    def __init__(self, target: DeviceObject) -> None:
        super().__init__("creator")
        self.target = target
        self.own: list[Irp] = []

    @airp.dispatch(IrpMajor.CREATE, IrpMajor.CLEANUP, IrpMajor.CLOSE)
    async def simple(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        own = fill_read(must(airp.allocate_irp(self.target.stack_size)), 4)
        own.set_completion_routine(lambda device, irp, context: STATUS_CONTINUE_COMPLETION)
        self.own.append(own)
        await airp.call_driver(self.target, own)
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS


class Lower(airp.Driver):
    """Breaks one rule in its read dispatch routine: *misdeed* ``(driver, device, irp)``."""

    def __init__(self, misdeed: Callable[[Lower, DeviceObject, Irp], Awaitable[int]]) -> None:
        super().__init__("lower")
        self.misdeed = misdeed
        self.lower: DeviceObject | None = None
        self.lock = airp.RemoveLock()

    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        return await self.misdeed(self, device, irp)


async def forwards_past_the_last_location(driver: Lower, device: DeviceObject, irp: Irp) -> int:
    irp.copy_current_stack_location_to_next()
    assert driver.lower is not None
    return await airp.call_driver(driver.lower, irp)  # no location left: 0x35


async def completes_with_pending(driver: Lower, device: DeviceObject, irp: Irp) -> int:
    complete_request(irp, STATUS_PENDING, 0)  # 0xC9 / 0x06
    return STATUS_PENDING


async def completes_with_cancel_routine_set(driver: Lower, device: DeviceObject, irp: Irp) -> int:
    irp.set_cancel_routine(lambda device, irp: None)
    complete_request(irp, STATUS_SUCCESS, 0)  # 0xC9 / 0x07
    return STATUS_SUCCESS


async def forwards_with_cancel_routine_set(driver: Lower, device: DeviceObject, irp: Irp) -> int:
    irp.set_cancel_routine(lambda device, irp: None)
    irp.copy_current_stack_location_to_next()
    assert driver.lower is not None
    return await airp.call_driver(driver.lower, irp)  # 0xC9 / 0x203


async def releases_a_remove_lock_never_acquired(driver: Lower, device: DeviceObject, irp: Irp) -> int:
    driver.lock.release(irp)  # 0xC4
    complete_request(irp, STATUS_SUCCESS, 0)
    return STATUS_SUCCESS


async def raises_a_plain_exception(driver: Lower, device: DeviceObject, irp: Irp) -> int:
    raise ValueError("the lower driver's own bug")


def first_error_of(misdeed: Callable[..., Any]) -> Callable[[BaseException], bool]:
    expected: dict[Any, Callable[[BaseException], bool]] = {
        forwards_past_the_last_location: lambda e: isinstance(e, BugCheck) and e.code == BugCheckCode.NO_MORE_IRP_STACK_LOCATIONS,
        completes_with_pending: lambda e: isinstance(e, BugCheck) and e.verifier_code == VerifierCode.COMPLETE_WITH_PENDING_STATUS,
        completes_with_cancel_routine_set: lambda e: isinstance(e, BugCheck)
        and e.verifier_code == VerifierCode.COMPLETE_WITH_CANCEL_ROUTINE,
        forwards_with_cancel_routine_set: lambda e: isinstance(e, BugCheck)
        and e.verifier_code == VerifierCode.CALL_DRIVER_WITH_CANCEL_ROUTINE,
        releases_a_remove_lock_never_acquired: lambda e: isinstance(e, BugCheck)
        and e.code == BugCheckCode.DRIVER_VERIFIER_DETECTED_VIOLATION,
        raises_a_plain_exception: lambda e: type(e) is ValueError and "own bug" in str(e),
    }
    return expected[misdeed]


MISDEEDS = [
    forwards_past_the_last_location,
    completes_with_pending,
    completes_with_cancel_routine_set,
    forwards_with_cancel_routine_set,
    releases_a_remove_lock_never_acquired,
    raises_a_plain_exception,
]


def build(misdeed: Callable[[Lower, DeviceObject, Irp], Awaitable[int]]) -> tuple[airp.IoManager, Creator, Lower]:
    io = airp.IoManager()
    lower_driver = Lower(misdeed)
    lower = io.create_device(lower_driver)
    bottom = io.create_device(Completer())
    if misdeed is forwards_past_the_last_location:
        # Not attached: its stack_size stays 1, so the creator's IRP has no location for bottom.
        lower_driver.lower = bottom
    else:
        lower_driver.lower = airp.attach_device(lower, bottom)
    creator = Creator(lower)
    io.create_device(creator, "\\Device\\Creator")
    return io, creator, lower_driver


def assert_follow_on_is_0x2a(first: BaseException, own: Irp) -> None:
    follow_on = getattr(first, "follow_on", None)
    assert isinstance(follow_on, BugCheck), f"no follow-on chained to {first!r}"
    assert follow_on.code == INCONSISTENT_IRP
    assert follow_on.irp is own
    assert follow_on.__context__ is first  # raised while airp cleaned up after the first
    notes = getattr(first, "__notes__", None)
    if notes is not None:  # Python 3.11 and later: the traceback shows it
        assert any("0x2a" in note for note in notes)


@pytest.mark.parametrize("misdeed", MISDEEDS, ids=lambda m: m.__name__)
async def test_the_requester_sees_the_lower_drivers_error_not_the_0x2a_that_followed(
    misdeed: Callable[[Lower, DeviceObject, Irp], Awaitable[int]],
) -> None:
    io, creator, _ = build(misdeed)
    async with io.open("\\Device\\Creator") as handle:
        with pytest.raises(BaseException) as caught:  # noqa: PT011 - which one is the point, checked below
            await handle.read(4)
    first = caught.value
    assert first_error_of(misdeed)(first), f"the read raised {first!r}"
    [own] = creator.own
    assert_follow_on_is_0x2a(first, own)
    # airp still completed the driver's own IRP exactly once, with the status it says.
    assert own.completed
    assert own.status == STATUS_INTERNAL_ERROR
    with pytest.raises(BugCheck) as again:
        complete_request(own)
    assert again.value.code == BugCheckCode.MULTIPLE_IRP_COMPLETE_REQUESTS


async def test_a_driver_calling_call_driver_itself_sees_the_first_bug_check() -> None:
    io = airp.IoManager()
    forwarder = Lower(forwards_past_the_last_location)
    lower = io.create_device(forwarder)
    forwarder.lower = io.create_device(Completer())
    own = fill_read(must(airp.allocate_irp(lower.stack_size)))  # no completion routine at all
    with pytest.raises(BugCheck) as caught:
        await airp.call_driver(lower, own)
    assert caught.value.code == BugCheckCode.NO_MORE_IRP_STACK_LOCATIONS
    assert_follow_on_is_0x2a(caught.value, own)


async def test_verifier_0x224_is_not_masked_by_the_0x2a_of_the_creators_irp() -> None:
    class Mismatch(airp.Driver):
        """Completes with success and returns another status (0x224)."""

        @airp.dispatch(IrpMajor.READ)
        async def read(self, device: DeviceObject, irp: Irp) -> int:
            complete_request(irp, STATUS_SUCCESS, 0)
            return STATUS_UNSUCCESSFUL

    class Waits(airp.Driver):
        """Forwards and waits for the IRP to come back (forward_and_wait), then completes it."""

        @airp.dispatch(IrpMajor.READ)
        async def read(self, device: DeviceObject, irp: Irp) -> int:
            assert device.lower_device is not None
            await airp.forward_and_wait(device.lower_device, irp)
            complete_request(irp)
            return STATUS_SUCCESS

    io = airp.IoManager(verifier=airp.Verifier())
    bottom = io.create_device(Mismatch("mismatch"))
    middle = io.create_device(Waits("waits"))
    airp.attach_device(middle, bottom)
    creator = Creator(middle)
    io.create_device(creator, "\\Device\\Creator")
    async with io.open("\\Device\\Creator") as handle:
        with pytest.raises(BugCheck) as caught:
            await handle.read(4)
    assert caught.value.verifier_code == VerifierCode.DISPATCH_STATUS_MISMATCH
    assert caught.value.driver is bottom.driver
    [own] = creator.own
    assert_follow_on_is_0x2a(caught.value, own)


async def test_a_raising_cancel_routine_is_what_the_canceller_sees() -> None:
    def raises(device: DeviceObject | None, irp: Irp) -> None:
        raise RuntimeError("the cancel routine's own bug")

    class Pends(airp.Driver):
        @airp.dispatch(IrpMajor.READ)
        async def read(self, device: DeviceObject, irp: Irp) -> int:
            irp.mark_pending()
            irp.set_cancel_routine(raises)
            return STATUS_PENDING

    lower = airp.IoManager().create_device(Pends("pends"))
    own = fill_read(must(airp.allocate_irp(lower.stack_size)))  # no routine that keeps it
    assert await airp.call_driver(lower, own) == STATUS_PENDING
    with pytest.raises(RuntimeError, match="cancel routine's own bug") as caught:
        airp.cancel_irp(own)
    assert_follow_on_is_0x2a(caught.value, own)
    assert own.completed


async def test_a_raising_completion_routine_is_what_the_completer_sees() -> None:
    def raises(device: DeviceObject | None, irp: Irp, context: Any) -> int:
        raise KeyError("the filter's completion routine")

    class Filter(airp.Driver):
        @airp.dispatch(IrpMajor.READ)
        async def read(self, device: DeviceObject, irp: Irp) -> int:
            assert device.lower_device is not None
            irp.copy_current_stack_location_to_next()
            irp.set_completion_routine(raises)
            return await airp.call_driver(device.lower_device, irp)

    io = airp.IoManager()
    holder = Holder(cancelable=False)
    bottom = io.create_device(holder)
    top = io.create_device(Filter("filter"))
    airp.attach_device(top, bottom)
    own = fill_read(must(airp.allocate_irp(top.stack_size)))
    assert await airp.call_driver(top, own) == STATUS_PENDING
    with pytest.raises(KeyError, match="completion routine") as caught:
        holder.complete()
    assert_follow_on_is_0x2a(caught.value, own)


# -- a lower driver completing a driver-allocated IRP twice: 0x44 naming it ------------------------


class CompletesTwice(airp.Driver):
    @airp.dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        complete_request(irp, STATUS_SUCCESS, 0)  # the bug
        return STATUS_SUCCESS


async def test_a_lower_driver_completing_twice_an_irp_its_creator_freed_is_0x44_naming_it() -> None:
    lower = airp.IoManager().create_device(CompletesTwice("twice"))
    own = fill_read(must(airp.allocate_irp(lower.stack_size)))

    def keep_and_free(device: DeviceObject | None, irp: Irp, context: Any) -> int:
        airp.free_irp(irp)  # the creator is correct: 5.8's shape (a)
        return STATUS_MORE_PROCESSING_REQUIRED

    own.set_completion_routine(keep_and_free)
    with pytest.raises(BugCheck) as caught:
        await airp.send_irp(lower, own)
    assert caught.value.code == BugCheckCode.MULTIPLE_IRP_COMPLETE_REQUESTS
    assert caught.value.device is lower
    assert caught.value.driver is lower.driver
    assert "keep_and_free" in str(caught.value)
    assert "freed" in str(caught.value)


async def test_a_lower_driver_completing_twice_an_irp_its_creator_waits_for_is_0x44_naming_it() -> None:
    lower = airp.IoManager().create_device(CompletesTwice("twice"))
    own = fill_read(must(airp.allocate_irp(lower.stack_size)))
    with pytest.raises(BugCheck) as caught:
        await airp.call_driver_and_wait(lower, own)  # the creator is correct: 5.8's shape (b)
    assert caught.value.code == BugCheckCode.MULTIPLE_IRP_COMPLETE_REQUESTS
    assert caught.value.device is lower


async def test_a_late_second_completion_of_a_freed_irp_is_0x44() -> None:
    holder = Holder(cancelable=False)
    lower = airp.IoManager().create_device(holder)
    own = fill_read(must(airp.allocate_irp(lower.stack_size)))
    back: list[int] = []

    def keep_and_free(device: DeviceObject | None, irp: Irp, context: Any) -> int:
        back.append(irp.status)
        airp.free_irp(irp)
        return STATUS_MORE_PROCESSING_REQUIRED

    own.set_completion_routine(keep_and_free)
    assert await airp.send_irp(lower, own) == STATUS_PENDING
    await anyio.sleep(1)
    complete_request(own, STATUS_SUCCESS, 0)  # the lower driver's worker, once
    assert back == [STATUS_SUCCESS]
    with pytest.raises(BugCheck) as caught:
        complete_request(own, STATUS_SUCCESS, 0)  # and again
    assert caught.value.code == BugCheckCode.MULTIPLE_IRP_COMPLETE_REQUESTS
    assert back == [STATUS_SUCCESS]  # the creator's routine did not run twice


async def test_the_creator_completing_its_own_taken_back_irp_is_still_0x2a() -> None:
    """No change for the creator's own breach of 5.8: it completed an IRP it should free."""
    lower = airp.IoManager().create_device(Completer())
    own = fill_read(must(airp.allocate_irp(lower.stack_size)))
    own.set_completion_routine(lambda device, irp, context: STATUS_MORE_PROCESSING_REQUIRED)
    await airp.send_irp(lower, own)
    with pytest.raises(BugCheck) as caught:
        complete_request(own)
    assert caught.value.code == INCONSISTENT_IRP
