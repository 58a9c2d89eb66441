"""The IoBuild* helpers and the ownership table of reference 2.9 (issue #3; reference 2.6 to 2.9)."""

from __future__ import annotations

from typing import Any

import pytest
from _own_irp_drivers import Completer, Holder, make_device

import airp
from airp import (
    STATUS_MORE_PROCESSING_REQUIRED,
    STATUS_NOT_SUPPORTED,
    STATUS_PENDING,
    STATUS_SUCCESS,
    BugCheck,
    DeviceFlags,
    Irp,
    IrpAllocator,
    IrpFlags,
    IrpMajor,
    TransferMethod,
    VerifierCode,
    build_asynchronous_fsd_request,
    build_device_io_control_request,
    build_synchronous_fsd_request,
    complete_request,
    free_irp,
    reuse_irp,
    send_irp,
)

DATA = b"0123456789abcdef"


def code(method: TransferMethod) -> int:
    return airp.ControlCode.make(0x8000, 0x900, method)


class Echo(airp.Driver):
    """Device control: answers with the input reversed, wherever the method put the buffers."""

    def __init__(self) -> None:
        super().__init__("echo")
        self.set_dispatch(IrpMajor.DEVICE_CONTROL, self.control)
        self.set_dispatch(IrpMajor.INTERNAL_DEVICE_CONTROL, self.control)
        self.majors: list[int] = []

    async def control(self, device: airp.DeviceObject, irp: Irp) -> int:
        loc = irp.current_stack_location
        self.majors.append(loc.major)
        params = loc.parameters
        method = params.io_control_code & 3
        if method == TransferMethod.NEITHER:
            data = bytes(params.type3_input_buffer)[::-1]
            out = irp.user_buffer
        elif method == TransferMethod.BUFFERED:
            assert irp.system_buffer is not None
            data = bytes(irp.system_buffer[: params.input_buffer_length])[::-1]
            out = irp.system_buffer
        else:
            data = bytes(irp.system_buffer or b"")[::-1]
            out = irp.mdl
            if method == TransferMethod.IN_DIRECT:
                assert irp.mdl is not None
                data = bytes(irp.mdl)  # IN_DIRECT: the "output" buffer is more input
                out = irp.system_buffer
        count = min(len(data), params.output_buffer_length)
        if out is not None and count:
            out[:count] = data[:count]
        complete_request(irp, STATUS_SUCCESS, count)
        return STATUS_SUCCESS


# -- synchronous FSD requests ---------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("flags", [DeviceFlags.BUFFERED_IO, DeviceFlags.DIRECT_IO, 0], ids=["buffered", "direct", "neither"])
async def test_a_synchronous_read_copies_back_like_a_requesters(flags: int) -> None:
    lower = make_device(Completer(data=DATA), flags=flags)
    request = build_synchronous_fsd_request(IrpMajor.READ, lower, length=8, offset=512)
    assert request is not None
    irp = request.irp
    loc = irp.next_stack_location
    assert (loc.major, loc.parameters.length, loc.parameters.byte_offset) == (IrpMajor.READ, 8, 512)
    assert irp.stack_count == lower.stack_size
    assert irp.owner is None
    assert await send_irp(lower, irp) == STATUS_SUCCESS
    assert await request == DATA[:8]


@pytest.mark.anyio
async def test_a_synchronous_write_carries_the_data() -> None:
    completer = Completer(information=4)
    lower = make_device(completer, flags=DeviceFlags.BUFFERED_IO)
    request = build_synchronous_fsd_request(IrpMajor.WRITE, lower, data=b"abcd")
    assert request is not None
    assert request.irp.system_buffer == bytearray(b"abcd")
    await send_irp(lower, request.irp)
    assert await request == 4


@pytest.mark.anyio
@pytest.mark.parametrize("major", [IrpMajor.FLUSH_BUFFERS, IrpMajor.SHUTDOWN])
async def test_requests_without_buffers(major: IrpMajor) -> None:
    lower = make_device(Completer(), flags=DeviceFlags.BUFFERED_IO)
    request = build_synchronous_fsd_request(major, lower)
    assert request is not None
    irp = request.irp
    assert irp.system_buffer is None
    assert irp.mdl is None
    assert irp.user_buffer is None
    await send_irp(lower, irp)
    assert await request == 0


@pytest.mark.parametrize("major", [IrpMajor.PNP, IrpMajor.POWER])
def test_pnp_and_power_requests_start_as_not_supported(major: IrpMajor) -> None:
    lower = make_device(Completer())
    request = build_synchronous_fsd_request(major, lower, minor=airp.PnpMinor.QUERY_CAPABILITIES)
    assert request is not None
    assert request.irp.status == STATUS_NOT_SUPPORTED
    assert request.irp.next_stack_location.minor == airp.PnpMinor.QUERY_CAPABILITIES


def test_only_the_documented_majors_are_built() -> None:
    lower = make_device(Completer())
    with pytest.raises(ValueError, match=r"builds .*READ.* requests, not"):
        build_synchronous_fsd_request(IrpMajor.CREATE, lower)
    with pytest.raises(ValueError, match="not"):
        build_asynchronous_fsd_request(IrpMajor.DEVICE_CONTROL, lower)
    with pytest.raises(TypeError, match="target DeviceObject"):
        build_synchronous_fsd_request(IrpMajor.READ, "disk")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="minor"):
        build_synchronous_fsd_request(IrpMajor.PNP, lower, minor=0x100)


def test_a_failed_build_gives_its_irp_back() -> None:
    allocator = IrpAllocator()
    lower = make_device(Completer())
    with pytest.raises(ValueError, match="read length"):
        build_synchronous_fsd_request(IrpMajor.READ, lower, length=-1, allocator=allocator)
    with pytest.raises(TypeError, match="bytes-like"):
        build_asynchronous_fsd_request(IrpMajor.WRITE, lower, data=None, allocator=allocator)
    with pytest.raises(ValueError, match="32-bit"):
        build_device_io_control_request(-5, lower, allocator=allocator)
    stats = allocator.statistics()
    assert stats.outstanding == 0
    assert stats.small.depth == 1


@pytest.mark.anyio
async def test_the_io_manager_frees_a_synchronous_request() -> None:
    """Reference 2.9: the driver must not free it; before completion it is on the requester's list
    (0xC9 / 0x02), afterwards it has been freed (0xC9 / 0x01); it is never reused (0x311)."""
    allocator = IrpAllocator()
    holder = Holder()
    lower = make_device(holder)
    request = build_synchronous_fsd_request(IrpMajor.READ, lower, length=4, allocator=allocator)
    assert request is not None
    irp = request.irp
    with pytest.raises(BugCheck, match="requester's list") as info:
        free_irp(irp)
    assert info.value.parameters[0] == VerifierCode.FREE_IRP_ON_THREAD
    with pytest.raises(BugCheck) as info:
        reuse_irp(irp)
    assert info.value.parameters[0] == VerifierCode.REUSE_NOT_ALLOCATED_IRP
    assert await send_irp(lower, irp) == STATUS_PENDING
    holder.complete(information=0)
    assert await request == b""
    assert allocator.statistics().outstanding == 0
    with pytest.raises(BugCheck, match="by the I/O manager") as info:
        free_irp(irp)
    assert info.value.parameters[0] == VerifierCode.FREE_NON_IRP
    # The requester can still read the completed request: the IRP is not recycled under it.
    assert allocator.allocate_irp(lower.stack_size) is not irp


@pytest.mark.anyio
async def test_a_synchronous_request_is_charged_to_the_task() -> None:
    holder = Holder()
    lower = make_device(holder)
    async with airp.task_io() as tio:
        request = build_synchronous_fsd_request(IrpMajor.READ, lower, length=4)
        assert request is not None
        assert request.irp.owner is tio
        assert tio.outstanding == [request.irp]
        await send_irp(lower, request.irp)
        holder.complete()
        await request
        assert tio.outstanding == []


@pytest.mark.anyio
async def test_leaving_the_task_io_block_cancels_a_synchronous_request() -> None:
    holder = Holder()
    lower = make_device(holder)
    async with airp.task_io():
        request = build_synchronous_fsd_request(IrpMajor.READ, lower, length=4)
        assert request is not None
        await send_irp(lower, request.irp)
    assert request.irp.completed
    assert request.irp.status == airp.STATUS_CANCELLED


@pytest.mark.anyio
async def test_a_caller_routine_may_take_a_synchronous_request_back_then_complete_it_again() -> None:
    """Reference 2.8: SMPR from the caller's routine, then complete_request so the I/O manager finishes."""
    lower = make_device(Completer(data=b"xyz"), flags=DeviceFlags.BUFFERED_IO)
    request = build_synchronous_fsd_request(IrpMajor.READ, lower, length=3)
    assert request is not None
    looked: list[Any] = []

    def look(device: airp.DeviceObject | None, irp: Irp, context: Any) -> int:
        looked.append(bytes(irp.system_buffer or b""))
        return STATUS_MORE_PROCESSING_REQUIRED

    request.irp.set_completion_routine(look)
    await send_irp(lower, request.irp)
    assert looked == [b"xyz"]
    assert not request.done
    complete_request(request.irp)
    assert await request == b"xyz"


# -- device control --------------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("method", list(TransferMethod), ids=lambda m: m.name)
async def test_device_control_requests_by_method(method: TransferMethod) -> None:
    echo = Echo()
    lower = make_device(echo)
    request = build_device_io_control_request(code(method), lower, b"abc", 3)
    assert request is not None
    assert request.irp.next_stack_location.major == IrpMajor.DEVICE_CONTROL
    await send_irp(lower, request.irp)
    result = await request
    if method == TransferMethod.IN_DIRECT:
        assert result == b"\0\0\0"  # nothing is copied back for direct I/O; the driver read the MDL
    else:
        assert result == b"cba"


@pytest.mark.anyio
async def test_internal_device_control() -> None:
    echo = Echo()
    lower = make_device(echo)
    request = build_device_io_control_request(code(TransferMethod.BUFFERED), lower, b"ab", 2, internal=True)
    assert request is not None
    await send_irp(lower, request.irp)
    assert await request == b"ba"
    assert echo.majors == [IrpMajor.INTERNAL_DEVICE_CONTROL]


@pytest.mark.anyio
async def test_a_device_control_request_belongs_to_the_io_manager() -> None:
    lower = make_device(Echo())
    request = build_device_io_control_request(code(TransferMethod.BUFFERED), lower, b"a", 1)
    assert request is not None
    with pytest.raises(BugCheck) as info:
        free_irp(request.irp)
    assert info.value.parameters[0] == VerifierCode.FREE_IRP_ON_THREAD


# -- asynchronous FSD requests ----------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("flags", [DeviceFlags.BUFFERED_IO, DeviceFlags.DIRECT_IO, 0], ids=["buffered", "direct", "neither"])
async def test_an_asynchronous_read_is_freed_by_its_routine(flags: int) -> None:
    allocator = IrpAllocator()
    lower = make_device(Completer(data=DATA), flags=flags)
    irp = build_asynchronous_fsd_request(IrpMajor.READ, lower, length=6, allocator=allocator)
    assert irp is not None
    assert irp.owner is None
    got: list[bytes] = []

    def done(device: airp.DeviceObject | None, irp: Irp, context: Any) -> int:
        where: Any = irp.system_buffer if irp.flags & IrpFlags.BUFFERED_IO else irp.mdl if irp.mdl is not None else irp.user_buffer
        got.append(bytes(where[: irp.information]))
        free_irp(irp)
        return STATUS_MORE_PROCESSING_REQUIRED

    irp.set_completion_routine(done)
    assert await send_irp(lower, irp) == STATUS_SUCCESS
    assert got == [DATA[:6]]
    stats = allocator.statistics()
    assert stats.outstanding == 0
    assert stats.small.depth == 1


@pytest.mark.anyio
async def test_an_asynchronous_request_that_reaches_the_top_is_bug_check_2a() -> None:
    lower = make_device(Completer())
    irp = build_asynchronous_fsd_request(IrpMajor.FLUSH_BUFFERS, lower)
    assert irp is not None
    irp.set_completion_routine(lambda device, irp, context: airp.STATUS_CONTINUE_COMPLETION)
    with pytest.raises(BugCheck, match="build_asynchronous_fsd_request") as info:
        await send_irp(lower, irp)
    assert info.value.code == 0x2A


def test_an_asynchronous_request_may_not_be_reused() -> None:
    irp = build_asynchronous_fsd_request(IrpMajor.WRITE, make_device(Completer()), data=b"x")
    assert irp is not None
    with pytest.raises(BugCheck, match="build_asynchronous_fsd_request") as info:
        reuse_irp(irp)
    assert info.value.parameters[0] == VerifierCode.REUSE_NOT_ALLOCATED_IRP
    free_irp(irp)  # never sent: the driver frees it


def test_builds_fail_under_low_resources() -> None:
    allocator = IrpAllocator(low_resources=airp.LowResourcesSimulation(1.0))
    lower = make_device(Completer())
    assert build_synchronous_fsd_request(IrpMajor.READ, lower, length=1, allocator=allocator) is None
    assert build_asynchronous_fsd_request(IrpMajor.READ, lower, length=1, allocator=allocator) is None
    assert build_device_io_control_request(code(TransferMethod.BUFFERED), lower, allocator=allocator) is None
    assert [f.operation for f in allocator.low_resources.failures] == [  # type: ignore[union-attr]
        "build_synchronous_fsd_request",
        "build_asynchronous_fsd_request",
        "build_device_io_control_request",
    ]
    assert allocator.statistics().failed_allocations == 3
