"""A routine that cannot run synchronously is refused where it is given.

``mark_irp_cancelable(irp, None)`` used to return STATUS_SUCCESS: a cancel then ran nothing and
``unmark_irp_cancelable`` answered STATUS_CANCELLED ("the cancel side owns it"), so nobody completed
the IRP.  Cancel routines, completion routines and cancel-safe queue callbacks run inside a
synchronous call (``cancel_irp``, the completion walk, a queue operation): ``None``, something not
callable, a coroutine function (also behind ``functools.partial`` or an ``async def __call__``),
an async generator function and a generator function are refused with a TypeError naming the
parameter, before anything is armed.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import pytest

import airp
from airp import (
    STATUS_CANCELLED,
    STATUS_INTERNAL_ERROR,
    STATUS_PENDING,
    STATUS_SUCCESS,
    CancelSafeQueue,
    DeviceFlags,
    DeviceObject,
    Driver,
    IoManager,
    Irp,
    IrpMajor,
    IrpQueue,
    cancel_irp,
    complete_request,
    dispatch,
)


async def _coroutine_routine(device: Any, irp: Any, *rest: Any) -> None: ...


async def _async_generator_routine(device: Any, irp: Any, *rest: Any) -> AsyncIterator[None]:
    yield None


def _generator_routine(device: Any, irp: Any, *rest: Any) -> Iterator[None]:
    yield None


class _AsyncCall:
    async def __call__(self, *args: Any) -> None: ...

    def __repr__(self) -> str:
        return "<_AsyncCall>"


class _Methods:
    async def coroutine_method(self, device: Any, irp: Any, *rest: Any) -> None: ...

    def plain_method(self, device: Any, irp: Any, *rest: Any) -> int:
        return 0


class _PlainCall:
    def __call__(self, *args: Any) -> int:
        return 0


# Everything that is not a plain function, with what the message says about it.
NOT_ROUTINES = [
    pytest.param(42, "not callable", id="int"),
    pytest.param("routine", "not callable", id="str"),
    pytest.param(_coroutine_routine, "coroutine function", id="async-def"),
    pytest.param(_Methods().coroutine_method, "coroutine function", id="async-method"),
    pytest.param(functools.partial(_coroutine_routine), "coroutine function", id="partial-async-def"),
    pytest.param(_AsyncCall(), "__call__ is a coroutine function", id="async-call"),
    pytest.param(_async_generator_routine, "coroutine function", id="async-generator"),
    pytest.param(_generator_routine, "generator function", id="generator"),
]

# Plain functions of every shape stay accepted.
ROUTINES = [
    pytest.param(lambda *args: 0, id="lambda"),
    pytest.param(_Methods().plain_method, id="method"),
    pytest.param(functools.partial(lambda *args: 0), id="partial"),
    pytest.param(_PlainCall(), id="callable-object"),
]


def _held_irp() -> Irp:
    """An IRP a driver holds at its own location, as a dispatch routine has it."""
    device = DeviceObject(Driver("holder"))
    irp = Irp(device.stack_size)
    irp.set_next_stack_location()
    irp.current_stack_location.device = device
    irp.current_stack_location.major = IrpMajor.READ
    return irp


# -- mark_irp_cancelable, mark_cancelable ----------------------------------------------------------


@pytest.mark.parametrize(("routine", "why"), [pytest.param(None, "got None", id="None"), *NOT_ROUTINES])
def test_mark_irp_cancelable_refuses_what_is_not_a_plain_function(routine: Any, why: str) -> None:
    irp = _held_irp()
    with pytest.raises(TypeError, match=r"mark_irp_cancelable\(irp, routine\): routine must be a plain function") as info:
        airp.mark_irp_cancelable(irp, routine)
    assert why in str(info.value)
    # Nothing was armed: the driver still owns the IRP and may complete it.
    assert irp.cancel_routine is None
    assert airp.unmark_irp_cancelable(irp) == STATUS_CANCELLED  # (none armed)
    complete_request(irp, STATUS_SUCCESS, 0)
    assert irp.completed


def test_mark_irp_cancelable_with_none_no_longer_strands_a_cancelled_irp() -> None:
    """The report's sequence: arm None, cancel, disarm; the driver must be left owning the IRP."""
    irp = _held_irp()
    with pytest.raises(TypeError, match="to disarm, call unmark_irp_cancelable"):
        airp.mark_irp_cancelable(irp, None)  # type: ignore[arg-type]
    assert cancel_irp(irp) is False  # no routine: only the flag is set
    assert irp.cancel
    complete_request(irp, STATUS_CANCELLED, 0)
    assert irp.completed


def test_mark_irp_cancelable_names_an_irp_that_is_not_one() -> None:
    with pytest.raises(TypeError, match=r"irp must be an Irp, got NoneType None"):
        airp.mark_irp_cancelable(None, lambda device, irp: None)  # type: ignore[arg-type]


@pytest.mark.parametrize("routine", ROUTINES)
def test_mark_irp_cancelable_accepts_plain_functions(routine: Any) -> None:
    irp = _held_irp()
    assert airp.mark_irp_cancelable(irp, routine) == STATUS_SUCCESS
    assert airp.unmark_irp_cancelable(irp) == STATUS_SUCCESS


@pytest.mark.parametrize(("routine", "why"), [pytest.param(None, "got None", id="None"), *NOT_ROUTINES])
def test_deprecated_mark_cancelable_refuses_the_same(routine: Any, why: str) -> None:
    irp = _held_irp()
    with pytest.warns(DeprecationWarning, match="mark_cancelable"), pytest.raises(TypeError, match=why):
        airp.mark_cancelable(irp, routine)
    assert irp.cancel_routine is None


# -- Irp.set_cancel_routine, Irp.set_completion_routine -------------------------------------------


@pytest.mark.parametrize(("routine", "why"), NOT_ROUTINES)
def test_set_cancel_routine_refuses_what_is_not_a_plain_function(routine: Any, why: str) -> None:
    irp = _held_irp()
    with pytest.raises(TypeError, match=r"set_cancel_routine\(routine\): a cancel routine must be a plain function") as info:
        irp.set_cancel_routine(routine)
    assert why in str(info.value)
    assert irp.cancel_routine is None


def test_set_cancel_routine_none_still_disarms() -> None:
    irp = _held_irp()

    def routine(device: Any, irp: Irp) -> None: ...

    assert irp.set_cancel_routine(routine) is None
    assert irp.set_cancel_routine(None) is routine


@pytest.mark.parametrize(("routine", "why"), [pytest.param(None, "got None", id="None"), *NOT_ROUTINES])
def test_set_completion_routine_refuses_what_is_not_a_plain_function(routine: Any, why: str) -> None:
    irp = Irp(2)
    # Whatever was checked last (the check remembers the last good routine), the bad one is caught.
    irp.set_completion_routine(lambda device, irp, context: 0)
    with pytest.raises(TypeError, match=r"set_completion_routine\(routine\): a completion routine must be a plain function") as info:
        irp.set_completion_routine(routine)
    assert why in str(info.value)
    fresh = Irp(2)
    with pytest.raises(TypeError, match=why):
        fresh.set_completion_routine(routine)
    assert fresh.next_stack_location.completion_routine is None


@pytest.mark.parametrize("routine", ROUTINES)
def test_set_cancel_and_completion_routine_accept_plain_functions(routine: Any) -> None:
    irp = _held_irp()
    assert irp.set_cancel_routine(routine) is None
    irp2 = Irp(2)
    irp2.set_completion_routine(routine)
    assert irp2.next_stack_location.completion_routine is routine


# -- CancelSafeQueue and IrpQueue callbacks -------------------------------------------------------


@pytest.mark.parametrize("name", ["insert_irp", "remove_irp", "peek_next_irp", "complete_canceled_irp"])
@pytest.mark.parametrize(("callback", "why"), NOT_ROUTINES)
def test_cancel_safe_queue_refuses_bad_callbacks(name: str, callback: Any, why: str) -> None:
    with pytest.raises(TypeError, match=f"{name} must be a plain function") as info:
        CancelSafeQueue(**{name: callback})
    assert why in str(info.value)


def test_cancel_safe_queue_refuses_a_subclass_with_an_async_callback() -> None:
    class Bad(IrpQueue):
        async def complete_canceled_irp(self, irp: Irp) -> None:  # type: ignore[override]
            complete_request(irp, STATUS_CANCELLED, 0)

    with pytest.raises(TypeError, match="complete_canceled_irp must be a plain function; got coroutine function"):
        Bad()


@pytest.mark.parametrize("name", ["matches", "complete_canceled_irp"])
@pytest.mark.parametrize(("callback", "why"), NOT_ROUTINES)
def test_irp_queue_refuses_bad_callbacks(name: str, callback: Any, why: str) -> None:
    with pytest.raises(TypeError, match=f"{name} must be a plain function") as info:
        IrpQueue(**{name: callback})
    assert why in str(info.value)


# -- from the requester's side, on both backends --------------------------------------------------


class _Pender(Driver):
    """Pends every read with ``mark_irp_cancelable(irp, self.routine)``, as the docs show."""

    def __init__(self, routine: Any) -> None:
        super().__init__("pender")
        self.routine = routine
        self.reads: list[Irp] = []

    @dispatch(IrpMajor.CREATE, IrpMajor.CLOSE, IrpMajor.CLEANUP)
    async def create_close(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS, 0)
        return STATUS_SUCCESS

    @dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        # Armed before it is marked pending: a routine that raises here still holds the IRP, so
        # the I/O manager completes it (one marked pending first is the driver's to finish).
        self.reads.append(irp)
        if airp.mark_irp_cancelable(irp, self.routine) == STATUS_CANCELLED:
            complete_request(irp, STATUS_CANCELLED, 0)
            return STATUS_CANCELLED
        irp.mark_pending()
        return STATUS_PENDING


@pytest.mark.anyio
@pytest.mark.parametrize("routine", [None, _coroutine_routine], ids=["None", "async-def"])
async def test_a_driver_arming_no_routine_fails_its_read_instead_of_stranding_it(routine: Any) -> None:
    """Before: the read pended with no routine, a timeout's cancel ran nothing, and the read was
    never completed.  Now the dispatch routine's mark_irp_cancelable raises, the I/O manager
    completes the IRP (STATUS_INTERNAL_ERROR) and the requester gets the TypeError."""
    async with IoManager() as io:
        driver = _Pender(routine)
        io.create_device(driver, "dev", flags=DeviceFlags.BUFFERED_IO)
        async with io.open("dev") as handle:
            with anyio.fail_after(10), pytest.raises(TypeError, match="routine must be a plain function"):
                await handle.read(4)
            [irp] = driver.reads
            assert irp.completed
            assert irp.status == STATUS_INTERNAL_ERROR
            assert isinstance(irp.routine_error, TypeError)
            assert io.outstanding_requests() == []
