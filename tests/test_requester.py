"""The requester's side: the I/O manager, handles, transfer types and the final stage (reference 2.8, 5.4,
5.6, 5.7, 8.3, 10.3, 11.5).
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from airp import (
    STATUS_BUFFER_OVERFLOW,
    STATUS_DELETE_PENDING,
    STATUS_DEVICE_NOT_READY,
    STATUS_NO_SUCH_DEVICE,
    STATUS_OBJECT_NAME_COLLISION,
    STATUS_OBJECT_NAME_NOT_FOUND,
    STATUS_PENDING,
    STATUS_SUCCESS,
    STATUS_UNSUCCESSFUL,
    BugCheck,
    ControlCode,
    DeviceFlags,
    DeviceIoControlParameters,
    DeviceObject,
    Driver,
    FileHandle,
    IoManager,
    IoStatus,
    Irp,
    IrpFlags,
    IrpMajor,
    NtStatusError,
    Overlapped,
    ReadWriteParameters,
    TransferMethod,
    attach_device,
    complete_request,
    detach_device,
    dispatch,
    get_attached_device,
)

BUFFERED = int(DeviceFlags.BUFFERED_IO)
DIRECT = int(DeviceFlags.DIRECT_IO)
NEITHER = 0


def ioctl(method: TransferMethod, function: int = 0x801) -> int:
    return ControlCode.make(0x8000, function, method)


class Device(Driver):
    """A small device that records what the I/O manager handed it, and answers as configured.

    READ fills bytes 1, 2, 3 ... into whatever buffer the transfer type provides; WRITE reads the
    data; DEVICE_CONTROL answers with its input reversed.  ``status`` / ``information`` override
    the answer; ``pend`` keeps the IRP pending (``held``) for the test to complete.
    """

    def __init__(self, name: str = "device") -> None:
        super().__init__(name)
        self.majors: list[IrpMajor] = []
        self.seen: list[dict[str, Any]] = []
        self.status: int = STATUS_SUCCESS
        self.information: int | None = None
        self.pend = False
        self.held: list[Irp] = []
        self.pended: anyio.Event | None = None
        self.create_status: int = STATUS_SUCCESS
        self.cleanup_status: int = STATUS_SUCCESS

    def record(self, irp: Irp) -> dict[str, Any]:
        loc = irp.current_stack_location
        seen = {
            "major": IrpMajor(loc.major),
            "location": irp.current_location,
            "flags": irp.flags,
            "system_buffer": irp.system_buffer,
            "mdl": irp.mdl,
            "user_buffer": irp.user_buffer,
            "parameters": loc.parameters,
            "file_object": loc.file_object,
            "irp_file_object": irp.file_object,
            "monitor": irp._monitor,
        }
        self.seen.append(seen)
        return seen

    def answer(self, irp: Irp, information: int) -> int:
        if self.information is not None:
            information = self.information
        if self.pend:
            irp.mark_pending()
            irp.information = information
            self.held.append(irp)
            if self.pended is not None:
                self.pended.set()
            return STATUS_PENDING
        complete_request(irp, self.status, information)
        return self.status

    @dispatch(IrpMajor.CREATE, IrpMajor.CLEANUP, IrpMajor.CLOSE)
    async def simple(self, device: DeviceObject, irp: Irp) -> int:
        major = IrpMajor(irp.current_stack_location.major)
        self.majors.append(major)
        self.record(irp)
        status = {IrpMajor.CREATE: self.create_status, IrpMajor.CLEANUP: self.cleanup_status}.get(major, STATUS_SUCCESS)
        complete_request(irp, status, 0)
        return status

    @dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        self.majors.append(IrpMajor.READ)
        seen = self.record(irp)
        length = seen["parameters"].length
        data = bytes(range(1, length + 1))
        if irp.system_buffer is not None:
            irp.system_buffer[:length] = data
        elif irp.mdl is not None:
            irp.mdl[:length] = data
        else:
            irp.user_buffer[:length] = data
        return self.answer(irp, length)

    @dispatch(IrpMajor.WRITE)
    async def write(self, device: DeviceObject, irp: Irp) -> int:
        self.majors.append(IrpMajor.WRITE)
        seen = self.record(irp)
        source = irp.system_buffer if irp.system_buffer is not None else irp.mdl if irp.mdl is not None else irp.user_buffer
        seen["data"] = bytes(source)
        return self.answer(irp, seen["parameters"].length)

    @dispatch(IrpMajor.DEVICE_CONTROL, IrpMajor.INTERNAL_DEVICE_CONTROL)
    async def control(self, device: DeviceObject, irp: Irp) -> int:
        self.majors.append(IrpMajor(irp.current_stack_location.major))
        seen = self.record(irp)
        params: DeviceIoControlParameters = seen["parameters"]
        method = params.io_control_code & 3
        if method == TransferMethod.NEITHER:
            request = bytes(params.type3_input_buffer)
        else:
            request = bytes(irp.system_buffer[: params.input_buffer_length]) if irp.system_buffer is not None else b""
        seen["input"] = request
        reply = bytes(reversed(request))[: params.output_buffer_length]
        if method == TransferMethod.BUFFERED:
            irp.system_buffer[: len(reply)] = reply  # type: ignore[index]
        elif method == TransferMethod.OUT_DIRECT:
            irp.mdl[: len(reply)] = reply  # type: ignore[index]
        elif method == TransferMethod.NEITHER:
            irp.user_buffer[: len(reply)] = reply
        else:  # IN_DIRECT: the output buffer is read by the device, nothing comes back
            reply = b""
        return self.answer(irp, len(reply))


def setup(flags: int = BUFFERED, name: str = "dev") -> tuple[IoManager, Device, DeviceObject]:
    io = IoManager()
    driver = Device(name)
    device = io.create_device(driver, name, flags=flags)
    return io, driver, device


# -- names and handles ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_open_unknown_name_fails_with_object_name_not_found() -> None:
    """8.3 / 11.1: opening a name nobody created answers STATUS_OBJECT_NAME_NOT_FOUND, naming the name."""
    io, _, _ = setup()
    with pytest.raises(NtStatusError, match=r"no device named '\\\\Device\\\\Missing'") as info:
        await io.open("\\Device\\Missing")
    assert info.value.status == STATUS_OBJECT_NAME_NOT_FOUND
    assert "STATUS_OBJECT_NAME_NOT_FOUND" in str(info.value)


def test_duplicate_device_name_is_object_name_collision() -> None:
    """8.3: IoCreateDevice with a name in use fails with STATUS_OBJECT_NAME_COLLISION."""
    io, _, device = setup(name="dup")
    with pytest.raises(NtStatusError, match="'dup' already exists") as info:
        io.create_device(Driver(), "dup")
    assert info.value.status == STATUS_OBJECT_NAME_COLLISION
    assert io.get_device("dup") is device
    assert io.device_names == ["dup"]


@pytest.mark.anyio
async def test_open_sends_create_and_close_sends_cleanup_then_close() -> None:
    """6.5: CREATE on open; closing the last handle sends IRP_MJ_CLEANUP, then IRP_MJ_CLOSE."""
    io, driver, device = setup()
    handle = await io.open("dev")
    assert isinstance(handle, FileHandle)
    assert handle.device is device
    assert driver.majors == [IrpMajor.CREATE]
    assert driver.seen[0]["file_object"] is handle.file_object
    assert driver.seen[0]["irp_file_object"] is handle.file_object
    await handle.close()
    assert driver.majors == [IrpMajor.CREATE, IrpMajor.CLEANUP, IrpMajor.CLOSE]
    assert all(seen["file_object"] is handle.file_object for seen in driver.seen)
    assert handle.file_object.closed
    await handle.close()  # closing twice does nothing
    assert len(driver.majors) == 3
    with pytest.raises(ValueError, match="is closed"):
        await handle.read(1)


@pytest.mark.anyio
async def test_open_as_async_context_manager_closes_on_exit() -> None:
    """6.5: ``async with io.open(...)`` opens (CREATE) and closes (CLEANUP, CLOSE)."""
    io, driver, _ = setup()
    async with io.open("dev") as handle:
        assert isinstance(handle, FileHandle)
        assert driver.majors == [IrpMajor.CREATE]
        assert await handle.read(2) == b"\x01\x02"
    assert driver.majors == [IrpMajor.CREATE, IrpMajor.READ, IrpMajor.CLEANUP, IrpMajor.CLOSE]
    assert handle.file_object.closed


@pytest.mark.anyio
async def test_failed_create_raises_and_returns_no_handle() -> None:
    """2.9: a CREATE the driver fails is reported through the call, with the driver's status."""
    io, driver, _ = setup()
    driver.create_status = STATUS_DELETE_PENDING
    with pytest.raises(NtStatusError) as info:
        await io.open("dev")
    assert info.value.status == STATUS_DELETE_PENDING
    assert driver.majors == [IrpMajor.CREATE]


@pytest.mark.anyio
async def test_close_ignores_a_failed_cleanup() -> None:
    """6.5: Windows closes the handle whatever the driver answers to CLEANUP and CLOSE."""
    io, driver, _ = setup()
    handle = await io.open("dev")
    driver.cleanup_status = STATUS_UNSUCCESSFUL
    await handle.close()
    assert driver.majors == [IrpMajor.CREATE, IrpMajor.CLEANUP, IrpMajor.CLOSE]
    assert handle.file_object.closed


@pytest.mark.anyio
async def test_requests_go_to_the_top_of_the_stack() -> None:
    """8.3: the I/O manager sends a handle's IRPs to the topmost device attached over the named one."""
    io, driver, device = setup()

    class PassThrough(Driver):
        pass_through = True

    top = io.create_device(PassThrough("filter"))
    attach_device(top, device)
    async with io.open("dev") as handle:
        assert await handle.read(3) == b"\x01\x02\x03"
    read = driver.seen[1]
    assert read["major"] == IrpMajor.READ
    assert read["location"] == 2  # the filter skipped: the bottom driver got location 2 of 2
    assert isinstance(read["system_buffer"], bytearray)  # DO_BUFFERED_IO inherited by the filter


# -- transfer types (2.6, 2.8, 11.5) -------------------------------------------------------------------


@pytest.mark.anyio
async def test_buffered_read_uses_a_system_buffer_copied_back() -> None:
    """2.6 / 5.7.1: buffered read: a private SystemBuffer; Information bytes are copied back at completion."""
    io, driver, _ = setup(BUFFERED)
    async with io.open("dev") as handle:
        driver.information = 3
        assert await handle.read(5, offset=512) == b"\x01\x02\x03"
    seen = driver.seen[1]
    assert isinstance(seen["system_buffer"], bytearray)
    assert len(seen["system_buffer"]) == 5
    assert seen["mdl"] is None
    assert seen["flags"] & IrpFlags.BUFFERED_IO
    assert seen["flags"] & IrpFlags.INPUT_OPERATION
    assert seen["flags"] & IrpFlags.DEALLOCATE_BUFFER
    assert seen["flags"] & IrpFlags.READ_OPERATION
    assert seen["parameters"] == ReadWriteParameters(length=5, byte_offset=512)
    assert seen["user_buffer"] is not seen["system_buffer"]
    assert bytes(seen["user_buffer"]) == b"\x01\x02\x03\x00\x00"  # only Information bytes copied


@pytest.mark.anyio
async def test_direct_read_gives_a_writable_mdl_of_the_callers_buffer() -> None:
    """2.6: direct read: an MDL (memoryview) on the requester's buffer, locked for write access."""
    io, driver, _ = setup(DIRECT)
    async with io.open("dev") as handle:
        assert await handle.read(4) == b"\x01\x02\x03\x04"
    seen = driver.seen[1]
    assert isinstance(seen["mdl"], memoryview)
    assert not seen["mdl"].readonly
    assert len(seen["mdl"]) == 4
    assert seen["system_buffer"] is None
    assert not seen["flags"] & IrpFlags.BUFFERED_IO


@pytest.mark.anyio
async def test_neither_read_gives_the_callers_buffer_itself() -> None:
    """2.6: neither: UserBuffer is the requester's buffer, no copy, no MDL."""
    io, driver, _ = setup(NEITHER)
    async with io.open("dev") as handle:
        assert await handle.read(2) == b"\x01\x02"
    seen = driver.seen[1]
    assert isinstance(seen["user_buffer"], bytearray)
    assert seen["system_buffer"] is None
    assert seen["mdl"] is None


@pytest.mark.anyio
async def test_buffered_write_copies_the_data_in() -> None:
    """2.6: buffered write: the caller's data is copied into the SystemBuffer before the request is sent."""
    io, driver, _ = setup(BUFFERED)
    data = bytearray(b"hello")
    async with io.open("dev") as handle:
        assert await handle.write(data, offset=8) == 5
    seen = driver.seen[1]
    assert seen["data"] == b"hello"
    assert seen["system_buffer"] is not data
    assert not seen["flags"] & IrpFlags.INPUT_OPERATION
    assert seen["flags"] & IrpFlags.WRITE_OPERATION
    assert seen["parameters"] == ReadWriteParameters(length=5, byte_offset=8)


@pytest.mark.anyio
async def test_direct_write_gives_a_read_only_mdl() -> None:
    """2.6: direct write: the MDL is probed for read access; the driver cannot write into it."""
    io, driver, _ = setup(DIRECT)
    async with io.open("dev") as handle:
        assert await handle.write(b"abc") == 3
    seen = driver.seen[1]
    assert seen["data"] == b"abc"
    assert isinstance(seen["mdl"], memoryview)
    assert seen["mdl"].readonly


@pytest.mark.anyio
async def test_neither_write_passes_the_callers_object() -> None:
    """2.6: neither: UserBuffer is the caller's buffer as given."""
    io, driver, _ = setup(NEITHER)
    data = b"xyz"
    async with io.open("dev") as handle:
        assert await handle.write(data) == 3
    assert driver.seen[1]["user_buffer"] is data


@pytest.mark.anyio
async def test_device_control_method_buffered() -> None:
    """2.8 / 11.5: METHOD_BUFFERED: one SystemBuffer of max(in, out) holding the input; output copied back."""
    io, driver, _ = setup()
    code = ioctl(TransferMethod.BUFFERED)
    async with io.open("dev") as handle:
        assert await handle.device_control(code, b"abc", 6) == b"cba"
    seen = driver.seen[1]
    assert seen["major"] == IrpMajor.DEVICE_CONTROL
    assert seen["parameters"] == DeviceIoControlParameters(code, 3, 6, None)
    assert len(seen["system_buffer"]) == 6
    assert seen["input"] == b"abc"
    assert seen["flags"] & IrpFlags.INPUT_OPERATION
    assert seen["mdl"] is None


@pytest.mark.anyio
async def test_device_control_method_out_direct() -> None:
    """2.8 / 11.5: METHOD_OUT_DIRECT: input buffered, output through a writable MDL, nothing copied back."""
    io, driver, _ = setup()
    async with io.open("dev") as handle:
        assert await handle.device_control(ioctl(TransferMethod.OUT_DIRECT), b"1234", 4) == b"4321"
    seen = driver.seen[1]
    assert bytes(seen["system_buffer"]) == b"1234"
    assert not seen["flags"] & IrpFlags.INPUT_OPERATION
    assert isinstance(seen["mdl"], memoryview)
    assert not seen["mdl"].readonly
    assert len(seen["mdl"]) == 4


@pytest.mark.anyio
async def test_device_control_method_in_direct() -> None:
    """2.8 / 11.5: METHOD_IN_DIRECT: the output buffer is locked for read access (a read-only MDL)."""
    io, driver, _ = setup()
    async with io.open("dev") as handle:
        assert await handle.device_control(ioctl(TransferMethod.IN_DIRECT), b"in", 3) == b""
    seen = driver.seen[1]
    assert bytes(seen["system_buffer"]) == b"in"
    assert isinstance(seen["mdl"], memoryview)
    assert seen["mdl"].readonly
    assert len(seen["mdl"]) == 3


@pytest.mark.anyio
async def test_device_control_method_neither() -> None:
    """2.8 / 11.5: METHOD_NEITHER: Type3InputBuffer is the caller's input, UserBuffer its output."""
    io, driver, _ = setup()
    request = b"raw"
    code = ioctl(TransferMethod.NEITHER)
    async with io.open("dev") as handle:
        assert await handle.device_control(code, request, 3, internal=True) == b"war"
    seen = driver.seen[1]
    assert seen["major"] == IrpMajor.INTERNAL_DEVICE_CONTROL
    assert seen["parameters"].type3_input_buffer is request
    assert isinstance(seen["user_buffer"], bytearray)
    assert seen["system_buffer"] is None
    assert seen["mdl"] is None


# -- statuses and the final stage (5.7) -----------------------------------------------------------------


@pytest.mark.anyio
async def test_failure_status_raises_nt_status_error_with_the_status() -> None:
    """5.7: an error status is reported to the requester; nothing is copied back."""
    io, driver, _ = setup(BUFFERED)
    async with io.open("dev") as handle:
        driver.status = STATUS_DEVICE_NOT_READY
        driver.information = 2
        with pytest.raises(NtStatusError, match="READ request failed: STATUS_DEVICE_NOT_READY") as info:
            await handle.read(4)
        driver.status = STATUS_SUCCESS
    assert info.value.status == STATUS_DEVICE_NOT_READY
    assert info.value.information == 2
    assert info.value.data is None
    assert bytes(driver.seen[1]["user_buffer"]) == b"\x00\x00\x00\x00"  # NT_ERROR: no copy-back


@pytest.mark.anyio
async def test_warning_still_copies_data_back_and_writes_the_status_block() -> None:
    """5.7.1 / 5.7.3: STATUS_BUFFER_OVERFLOW is not NT_ERROR: data copied back, IOSB written, yet it raises."""
    io, driver, _ = setup(BUFFERED)
    async with io.open("dev") as handle:
        driver.status = STATUS_BUFFER_OVERFLOW
        request = await handle.device_control_overlapped(ioctl(TransferMethod.BUFFERED), b"abcd", 2)
        driver.status = STATUS_SUCCESS
        assert request.status_returned == STATUS_BUFFER_OVERFLOW
        assert request.io_status_block == (STATUS_BUFFER_OVERFLOW, 2)
        with pytest.raises(NtStatusError) as info:
            await request
    assert info.value.status == STATUS_BUFFER_OVERFLOW
    assert info.value.data == b"dc"
    assert info.value.information == 2


@pytest.mark.anyio
async def test_synchronous_error_does_not_write_the_status_block() -> None:
    """5.7.4: an error returned synchronously is reported through the return value, not the IOSB."""
    io, driver, _ = setup()
    async with io.open("dev") as handle:
        driver.status = STATUS_UNSUCCESSFUL
        request = await handle.read_overlapped(1)
        driver.status = STATUS_SUCCESS
    assert request.done
    assert request.status_returned == STATUS_UNSUCCESSFUL
    assert request.io_status_block is None
    with pytest.raises(NtStatusError) as info:
        request.result()
    assert info.value.status == STATUS_UNSUCCESSFUL


@pytest.mark.anyio
async def test_pended_error_writes_the_status_block() -> None:
    """5.7.3: an error on a pended IRP (PendingReturned) is written to the IOSB."""
    io, driver, _ = setup()
    async with io.open("dev") as handle:
        driver.pend = True
        request = await handle.read_overlapped(1)
        driver.pend = False
        assert request.status_returned == STATUS_PENDING
        assert request.io_status_block is None
        complete_request(driver.held.pop(), STATUS_DEVICE_NOT_READY, 0)
        assert request.io_status_block == (STATUS_DEVICE_NOT_READY, 0)
        with pytest.raises(NtStatusError) as info:
            await request
    assert info.value.status == STATUS_DEVICE_NOT_READY


@pytest.mark.anyio
async def test_overlapped_returns_pending_while_io_status_holds_the_result() -> None:
    """5.4 / 5.7: STATUS_PENDING is what dispatch returned; the result is the IRP's IoStatus, later."""
    io, driver, _ = setup(DIRECT)
    driver.pended = anyio.Event()
    results: list[bytes] = []
    async with io.open("dev") as handle:
        driver.pend = True
        request = await handle.read_overlapped(3)
        driver.pend = False
        assert isinstance(request, Overlapped)
        assert request.status_returned == STATUS_PENDING
        assert not request.done
        with pytest.raises(RuntimeError, match="has not completed yet"):
            request.result()

        async def wait() -> None:
            results.append(await request)

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait)
            await driver.pended.wait()
            complete_request(driver.held.pop(), STATUS_SUCCESS, 3)
    assert results == [b"\x01\x02\x03"]
    assert request.done
    assert request.status_returned == STATUS_PENDING
    assert request.io_status_block == IoStatus(STATUS_SUCCESS, 3)
    assert request.irp.pending_returned is True


@pytest.mark.anyio
async def test_plain_read_waits_for_a_pended_irp_completed_by_another_task() -> None:
    """5.6: the requester awaits the IRP; whoever completes it later wakes the waiter."""
    io, driver, _ = setup(BUFFERED)
    driver.pended = anyio.Event()
    results: list[bytes] = []
    async with io.open("dev") as handle:
        driver.pend = True

        async def reader() -> None:
            results.append(await handle.read(2))

        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            await driver.pended.wait()
            assert results == []
            complete_request(driver.held.pop(), STATUS_SUCCESS, 2)
        driver.pend = False
    assert results == [b"\x01\x02"]


# -- verifier checks of the returned status (5.4, 10.3) -------------------------------------------------


class Misbehaving(Driver):
    """READ answers according to ``mode``: the pending-rule violations of 5.4."""

    def __init__(self, mode: str) -> None:
        super().__init__(f"misbehaving-{mode}")
        self.mode = mode
        self.held: list[Irp] = []

    @dispatch(IrpMajor.CREATE, IrpMajor.CLEANUP, IrpMajor.CLOSE)
    async def simple(self, device: DeviceObject, irp: Irp) -> int:
        complete_request(irp, STATUS_SUCCESS)
        return STATUS_SUCCESS

    @dispatch(IrpMajor.READ)
    async def read(self, device: DeviceObject, irp: Irp) -> int:
        if self.mode == "pending-not-marked":
            complete_request(irp, STATUS_SUCCESS, 0)
            return STATUS_PENDING
        if self.mode == "pending-not-marked-later":
            self.held.append(irp)
            return STATUS_PENDING
        if self.mode == "marked-not-pending":
            irp.mark_pending()
            complete_request(irp, STATUS_SUCCESS, 0)
            return STATUS_SUCCESS
        if self.mode == "not-completed":
            return STATUS_SUCCESS
        if self.mode == "information-too-large":
            complete_request(irp, STATUS_SUCCESS, irp.current_stack_location.parameters.length + 1)
            return STATUS_SUCCESS
        raise AssertionError(self.mode)


async def open_misbehaving(mode: str) -> tuple[FileHandle, Misbehaving]:
    io = IoManager()
    driver = Misbehaving(mode)
    io.create_device(driver, "bad", flags=BUFFERED)
    return await io.open("bad"), driver


@pytest.mark.anyio
async def test_returning_pending_without_marking_is_bug_check_c9_23d() -> None:
    """5.4 / 10.3: returned STATUS_PENDING without IoMarkIrpPending -> 0xC9 / 0x23D."""
    handle, driver = await open_misbehaving("pending-not-marked")
    with pytest.raises(BugCheck, match="without marking the IRP pending") as info:
        await handle.read(1)
    assert (info.value.code, info.value.parameters[0]) == (0xC9, 0x23D)
    assert info.value.driver is driver


@pytest.mark.anyio
async def test_returning_pending_without_marking_is_caught_when_completed_later() -> None:
    """5.4 / 10.3: the same violation, found when the driver completes the IRP after returning."""
    handle, driver = await open_misbehaving("pending-not-marked-later")
    request = await handle.read_overlapped(1)
    assert request.status_returned == STATUS_PENDING
    with pytest.raises(BugCheck) as info:
        complete_request(driver.held.pop(), STATUS_SUCCESS, 1)
    assert (info.value.code, info.value.parameters[0]) == (0xC9, 0x23D)


@pytest.mark.anyio
async def test_marking_pending_but_returning_other_status_is_bug_check_c9_23e() -> None:
    """5.4 / 10.3: marked pending but returned something else -> 0xC9 / 0x23E."""
    handle, _ = await open_misbehaving("marked-not-pending")
    with pytest.raises(BugCheck, match="must return STATUS_PENDING") as info:
        await handle.read(1)
    assert (info.value.code, info.value.parameters[0]) == (0xC9, 0x23E)


@pytest.mark.anyio
async def test_returning_without_completing_or_pending_is_bug_check_c9_226() -> None:
    """10.3: dispatch returned a status without completing, forwarding or returning STATUS_PENDING -> 0x226."""
    handle, _ = await open_misbehaving("not-completed")
    with pytest.raises(BugCheck, match="without completing the IRP") as info:
        await handle.read(1)
    assert (info.value.code, info.value.parameters[0]) == (0xC9, 0x226)


@pytest.mark.anyio
async def test_information_larger_than_output_buffer_is_bug_check_c9_312() -> None:
    """10.3: IoStatus.Information larger than the requester's output buffer -> 0xC9 / 0x312."""
    handle, _ = await open_misbehaving("information-too-large")
    with pytest.raises(BugCheck, match="larger than the requester's output buffer") as info:
        await handle.read(4)
    assert (info.value.code, info.value.parameters[0]) == (0xC9, 0x312)
    assert info.value.parameters[2:] == (5, 4)


# -- device stacks (8.3) ----------------------------------------------------------------------------------


def test_attach_follows_the_stack_size_rule_and_returns_the_top() -> None:
    """8.3: Source.StackSize = Top.StackSize + 1; attaching to a lower device lands on the topmost one."""
    io = IoManager()
    bottom = io.create_device(Driver("bottom"), "bottom")
    middle = io.create_device(Driver("middle"))
    top = io.create_device(Driver("top"))
    assert bottom.stack_size == 1
    assert attach_device(middle, bottom) is bottom
    assert attach_device(top, bottom) is middle
    assert (bottom.stack_size, middle.stack_size, top.stack_size) == (1, 2, 3)
    assert (top.lower_device, middle.lower_device, bottom.lower_device) == (middle, bottom, None)
    assert (bottom.attached_device, middle.attached_device, top.attached_device) == (middle, top, None)
    assert get_attached_device(bottom) is top
    assert io.new_traced_irp(top.stack_size).stack_count == 3


def test_attach_inherits_transfer_flags_and_device_type() -> None:
    """8.3 (documented departure): DO_BUFFERED_IO / DO_DIRECT_IO / DO_POWER_PAGABLE and the type are copied."""
    io = IoManager()
    flags = DeviceFlags.DIRECT_IO | DeviceFlags.POWER_PAGABLE | DeviceFlags.EXCLUSIVE
    bottom = io.create_device(Driver("bottom"), "bottom", flags=flags, device_type=0x07)
    filter_ = io.create_device(Driver("filter"))
    attach_device(filter_, bottom)
    assert filter_.flags & DeviceFlags.DIRECT_IO
    assert filter_.flags & DeviceFlags.POWER_PAGABLE
    assert not filter_.flags & DeviceFlags.EXCLUSIVE
    assert not filter_.flags & DeviceFlags.BUFFERED_IO
    assert filter_.device_type == 0x07


def test_attach_to_an_initializing_device_fails() -> None:
    """8.3: the top of the target stack still has DO_DEVICE_INITIALIZING -> no attach (STATUS_NO_SUCH_DEVICE)."""
    io = IoManager()
    bottom = io.create_device(Driver("bottom"), "bottom", initializing=True)
    filter_ = io.create_device(Driver("filter"))
    with pytest.raises(NtStatusError) as info:
        attach_device(filter_, bottom)
    assert info.value.status == STATUS_NO_SUCH_DEVICE
    assert filter_.lower_device is None
    assert bottom.attached_device is None


def test_attach_twice_is_refused() -> None:
    """8.3: a device is attached to one stack at a time."""
    io = IoManager()
    bottom = io.create_device(Driver("bottom"), "bottom")
    filter_ = io.create_device(Driver("filter"))
    attach_device(filter_, bottom)
    with pytest.raises(ValueError, match="already attached"):
        attach_device(filter_, bottom)


def test_detach_twice_is_bug_check_c9_202() -> None:
    """8.3 / 10.3: IoDetachDevice with nothing attached -> 0xC9 / 0x202."""
    io = IoManager()
    bottom = io.create_device(Driver("bottom"), "bottom")
    filter_ = io.create_device(Driver("filter"))
    attach_device(filter_, bottom)
    detach_device(bottom)
    assert bottom.attached_device is None
    assert filter_.lower_device is None
    with pytest.raises(BugCheck) as info:
        detach_device(bottom)
    assert (info.value.code, info.value.parameters[0]) == (0xC9, 0x202)
    assert info.value.device is bottom


def test_delete_attached_device_is_bug_check_c9_201() -> None:
    """8.3 / 10.3: IoDeleteDevice while still attached to a lower device -> 0xC9 / 0x201."""
    io = IoManager()
    bottom = io.create_device(Driver("bottom"), "bottom")
    filter_ = io.create_device(Driver("filter"), "filter")
    attach_device(filter_, bottom)
    with pytest.raises(BugCheck, match="detach it first") as info:
        io.delete_device(filter_)
    assert (info.value.code, info.value.parameters[0]) == (0xC9, 0x201)
    assert not filter_.deleted
    detach_device(bottom)
    io.delete_device(filter_)
    assert filter_.deleted
    assert io.device_names == ["bottom"]


def test_delete_twice_is_bug_check_c9_240() -> None:
    """8.3 / 10.3: deleting a device twice -> 0xC9 / 0x240."""
    io = IoManager()
    device = io.create_device(Driver("d"), "d")
    io.delete_device(device)
    with pytest.raises(BugCheck) as info:
        io.delete_device(device)
    assert (info.value.code, info.value.parameters[0]) == (0xC9, 0x240)
    with pytest.raises(NtStatusError):
        io.get_device("d")


@pytest.mark.anyio
async def test_irps_carry_no_monitor_without_tracing() -> None:
    """DESIGN: tracing is off unless a monitor is given: IRPs then carry none."""
    io, driver, _ = setup()
    async with io.open("dev") as handle:
        await handle.read(1)
    assert [seen["monitor"] for seen in driver.seen] == [None] * 4
    assert io.new_traced_irp(1)._monitor is None
