"""NTSTATUS values, their predicates, and the function codes and flags (reference section 11).

Everything here is plain synchronous Python: the status and code tables are part of the sans-I/O
machine.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import airp
from airp import (
    ControlCode,
    DeviceFlags,
    FileAccess,
    IoStatus,
    IrpFlags,
    IrpMajor,
    NtStatus,
    PnpMinor,
    PowerMinor,
    StackControl,
    TransferMethod,
    nt_error,
    nt_information,
    nt_success,
    nt_warning,
)

# Reference 11.1, the whole table (plus the two object-name statuses the I/O manager answers with).
REFERENCE_STATUSES: dict[str, int] = {
    "STATUS_SUCCESS": 0x00000000,
    "STATUS_TIMEOUT": 0x00000102,
    "STATUS_PENDING": 0x00000103,
    "STATUS_REPARSE": 0x00000104,
    "STATUS_USER_APC": 0x000000C0,
    "STATUS_ALERTED": 0x00000101,
    "STATUS_BUFFER_OVERFLOW": 0x80000005,
    "STATUS_VERIFY_REQUIRED": 0x80000016,
    "STATUS_UNSUCCESSFUL": 0xC0000001,
    "STATUS_NOT_IMPLEMENTED": 0xC0000002,
    "STATUS_INVALID_PARAMETER": 0xC000000D,
    "STATUS_NO_SUCH_DEVICE": 0xC000000E,
    "STATUS_DEVICE_NOT_CONNECTED": 0xC000009D,
    "STATUS_NOT_FOUND": 0xC0000225,
    "STATUS_INVALID_DEVICE_REQUEST": 0xC0000010,
    "STATUS_END_OF_FILE": 0xC0000011,
    "STATUS_MORE_PROCESSING_REQUIRED": 0xC0000016,
    "STATUS_BUFFER_TOO_SMALL": 0xC0000023,
    "STATUS_DELETE_PENDING": 0xC0000056,
    "STATUS_INSUFFICIENT_RESOURCES": 0xC000009A,
    "STATUS_DEVICE_NOT_READY": 0xC00000A3,
    "STATUS_IO_TIMEOUT": 0xC00000B5,
    "STATUS_NOT_SUPPORTED": 0xC00000BB,
    "STATUS_CANCELLED": 0xC0000120,
    "STATUS_INVALID_DEVICE_STATE": 0xC0000184,
    "STATUS_DEVICE_REMOVED": 0xC00002B6,
    "STATUS_DRIVER_CANCEL_TIMEOUT": 0xC000021E,
    "STATUS_OBJECT_NAME_NOT_FOUND": 0xC0000034,
    "STATUS_OBJECT_NAME_COLLISION": 0xC0000035,
}

# (value, nt_success, nt_information, nt_warning, nt_error): the four severities of 11.1.
SEVERITY_TABLE: list[tuple[int, bool, bool, bool, bool]] = [
    (0x00000000, True, False, False, False),  # STATUS_SUCCESS
    (0x00000103, True, False, False, False),  # STATUS_PENDING is a success code
    (0x3FFFFFFF, True, False, False, False),  # largest success value
    (0x40000000, True, True, False, False),  # smallest informational value
    (0x40000005, True, True, False, False),
    (0x7FFFFFFF, True, True, False, False),
    (0x80000005, False, False, True, False),  # STATUS_BUFFER_OVERFLOW: neither success nor error
    (0x80000016, False, False, True, False),  # STATUS_VERIFY_REQUIRED
    (0xBFFFFFFF, False, False, True, False),
    (0xC0000016, False, False, False, True),  # STATUS_MORE_PROCESSING_REQUIRED is error severity
    (0xC0000120, False, False, False, True),  # STATUS_CANCELLED
    (0xFFFFFFFF, False, False, False, True),
]

u32 = st.integers(min_value=0, max_value=0xFFFF_FFFF)


@pytest.mark.parametrize(("name", "value"), sorted(REFERENCE_STATUSES.items()))
def test_reference_statuses_are_exported_with_their_windows_value(name: str, value: int) -> None:
    """11.1: every NTSTATUS of the table is importable from airp by name, with its real value."""
    status = getattr(airp, name)
    assert type(status) is NtStatus
    assert status == value
    assert int(status) == value
    assert status.name == name
    assert NtStatus(value).name == name


def test_continue_completion_is_status_success() -> None:
    """11.1: STATUS_CONTINUE_COMPLETION is STATUS_SUCCESS (0), and prints as STATUS_SUCCESS."""
    assert airp.STATUS_CONTINUE_COMPLETION == 0
    assert airp.STATUS_CONTINUE_COMPLETION is airp.STATUS_SUCCESS
    assert NtStatus(0).name == "STATUS_SUCCESS"


def test_status_repr_and_str_show_name_and_hex() -> None:
    """11.1: a status prints with its symbolic name; str adds the 8-digit hex value."""
    assert repr(airp.STATUS_CANCELLED) == "NtStatus(STATUS_CANCELLED)"
    assert str(airp.STATUS_CANCELLED) == "STATUS_CANCELLED (0xc0000120)"
    assert str(airp.STATUS_SUCCESS) == "STATUS_SUCCESS (0x00000000)"


def test_unknown_status_is_representable_and_named_by_hex() -> None:
    """11.1: an NTSTATUS airp has no name for (a customer code) is valid and named by its hex value."""
    status = NtStatus(0xE0001234)
    assert status == 0xE0001234
    assert status.name == "0xE0001234"
    assert repr(status) == "NtStatus(0xE0001234)"
    assert status.severity == 3
    assert NtStatus(0x5).name == "0x00000005"


def test_signed_int32_input_is_normalised_to_unsigned() -> None:
    """11.1: the signed form C code prints (-1073741536) is the same status as 0xC0000120."""
    assert NtStatus(-1073741536) == 0xC0000120
    assert NtStatus(-1073741536) == airp.STATUS_CANCELLED
    assert NtStatus(-1073741536).name == "STATUS_CANCELLED"
    assert NtStatus(-1) == 0xFFFFFFFF
    assert NtStatus(-0x8000_0000) == 0x8000_0000
    assert hash(NtStatus(-1073741536)) == hash(0xC0000120)


@given(u32)
def test_status_round_trips_through_its_signed_form(value: int) -> None:
    """11.1: NtStatus(x) and NtStatus(signed32(x)) are the same status."""
    signed = value - 0x1_0000_0000 if value >= 0x8000_0000 else value
    assert NtStatus(signed) == NtStatus(value) == value


def test_status_constructor_is_idempotent() -> None:
    """An NtStatus passed to NtStatus comes back as is."""
    assert NtStatus(airp.STATUS_PENDING) is airp.STATUS_PENDING


@pytest.mark.parametrize("bad", [True, False, "0", "STATUS_SUCCESS", 1.0, None, b"\x00"])
def test_status_rejects_non_int_input_with_clear_message(bad: object) -> None:
    """11.1: an NTSTATUS is an int; bool, str, float ... are refused with a TypeError naming the type."""
    with pytest.raises(TypeError, match=r"an NTSTATUS must be an int in 0\.\.0xFFFFFFFF, got " + type(bad).__name__):
        NtStatus(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0x1_0000_0000, -0x8000_0001, 2**64, -(2**40)])
def test_status_rejects_values_that_do_not_fit_32_bits(bad: int) -> None:
    """11.1: NTSTATUS is 32 bits; larger values (and signed values below INT32_MIN) are refused."""
    with pytest.raises(ValueError, match="must fit in 32 bits"):
        NtStatus(bad)


@pytest.mark.parametrize(("value", "success", "information", "warning", "error"), SEVERITY_TABLE)
def test_predicates_follow_windows_severity(value: int, success: bool, information: bool, warning: bool, error: bool) -> None:
    """11.1: NT_SUCCESS is success + informational; warnings are neither success nor error."""
    assert nt_success(value) is success
    assert nt_information(value) is information
    assert nt_warning(value) is warning
    assert nt_error(value) is error
    assert NtStatus(value).severity == value >> 30


def test_warning_is_neither_success_nor_error() -> None:
    """11.1: STATUS_BUFFER_OVERFLOW fails NT_SUCCESS yet is not NT_ERROR (data is still copied back)."""
    status = airp.STATUS_BUFFER_OVERFLOW
    assert not nt_success(status)
    assert not nt_error(status)
    assert nt_warning(status)


@given(u32)
def test_exactly_one_severity_and_nt_success_is_signed_non_negative(value: int) -> None:
    """11.1: the top two bits give exactly one severity; NT_SUCCESS(s) <=> (int32)s >= 0."""
    severity = [nt_success(value) and not nt_information(value), nt_information(value), nt_warning(value), nt_error(value)]
    assert severity.count(True) == 1
    assert severity.index(True) == value >> 30
    signed = value - 0x1_0000_0000 if value >= 0x8000_0000 else value
    assert nt_success(value) is (signed >= 0)


def test_predicates_accept_the_signed_int32_form() -> None:
    """11.1: NT_SUCCESS takes a signed LONG; the signed form of a status must answer like the unsigned one.

    NtStatus() normalises signed input, so the predicates must too: ``nt_success(-1073741536)``
    (STATUS_CANCELLED as C prints it) is False in Windows.
    """
    cancelled = -1073741536  # 0xC0000120
    overflow = -2147483643  # 0x80000005
    assert (nt_success(cancelled), nt_error(cancelled)) == (False, True)
    assert (nt_success(overflow), nt_warning(overflow), nt_error(overflow)) == (False, True, False)


def test_io_status_is_a_status_and_information_record() -> None:
    """1.1: IoStatus is {Status, Information}."""
    io_status = IoStatus(airp.STATUS_SUCCESS, 12)
    assert io_status.status == 0
    assert io_status.information == 12
    assert tuple(io_status) == (0, 12)
    assert repr(io_status) == "IoStatus(STATUS_SUCCESS, information=12)"


# -- I/O control codes (11.5) ----------------------------------------------------------------


def test_control_code_make_matches_ctl_code_formula() -> None:
    """11.5: code = (DeviceType << 16) | (Access << 14) | (Function << 2) | Method."""
    # IOCTL_STORAGE_CHECK_VERIFY = CTL_CODE(0x2D, 0x0200, METHOD_BUFFERED, FILE_READ_ACCESS)
    assert ControlCode.make(0x2D, 0x200, TransferMethod.BUFFERED, FileAccess.READ) == 0x2D4800
    # IOCTL_DISK_GET_DRIVE_GEOMETRY = CTL_CODE(7, 0, METHOD_BUFFERED, FILE_ANY_ACCESS)
    assert ControlCode.make(7, 0) == 0x70000
    assert ControlCode.make(0x8000, 0x800, TransferMethod.NEITHER, FileAccess.READ | FileAccess.WRITE) == 0x8000E003


def test_control_code_parse_extracts_the_four_fields() -> None:
    """11.5: method = code & 3, function = (code >> 2) & 0xFFF, access = (code >> 14) & 3, type = code >> 16."""
    parsed = ControlCode.parse(0x2D4800)
    assert parsed == ControlCode(device_type=0x2D, function=0x200, method=TransferMethod.BUFFERED, access=FileAccess.READ)
    assert type(parsed.method) is TransferMethod
    assert isinstance(parsed.access, FileAccess)
    assert parsed.value == 0x2D4800


@settings(max_examples=200, deadline=None)
@given(
    device_type=st.integers(0, 0xFFFF),
    function=st.integers(0, 0xFFF),
    method=st.integers(0, 3),
    access=st.integers(0, 3),
)
def test_control_code_make_parse_round_trip(device_type: int, function: int, method: int, access: int) -> None:
    """11.5: make and parse are inverse over every field value."""
    code = ControlCode.make(device_type, function, method, access)
    assert 0 <= code <= 0xFFFF_FFFF
    parsed = ControlCode.parse(code)
    assert (parsed.device_type, parsed.function, int(parsed.method), int(parsed.access)) == (device_type, function, method, access)
    assert parsed.value == code
    assert code & 3 == method


@settings(max_examples=200, deadline=None)
@given(u32)
def test_control_code_parse_make_round_trip(code: int) -> None:
    """11.5: every 32-bit number is a control code, and parse then make gives it back."""
    assert ControlCode.parse(code).value == code


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("device_type", {"device_type": 0x10000, "function": 0}),
        ("device_type", {"device_type": -1, "function": 0}),
        ("function", {"device_type": 0, "function": 0x1000}),
        ("function", {"device_type": 0, "function": -1}),
        ("method", {"device_type": 0, "function": 0, "method": 4}),
        ("access", {"device_type": 0, "function": 0, "access": 4}),
        ("device_type", {"device_type": "7", "function": 0}),
    ],
)
def test_control_code_make_rejects_out_of_range_fields(field: str, kwargs: dict[str, object]) -> None:
    """11.5: each field has a fixed width; a value that does not fit is refused, naming the field."""
    with pytest.raises(ValueError, match=f"control code {field} must be an int"):
        ControlCode.make(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [-1, 0x1_0000_0000, "0x2D4800", None])
def test_control_code_parse_rejects_non_32_bit_values(bad: object) -> None:
    """11.5: a control code is a 32-bit unsigned int."""
    with pytest.raises(ValueError, match="a control code is a 32-bit unsigned int"):
        ControlCode.parse(bad)  # type: ignore[arg-type]


def test_transfer_methods_and_access_values() -> None:
    """11.5: METHOD_BUFFERED 0, IN_DIRECT 1, OUT_DIRECT 2, NEITHER 3; FILE_ANY 0, READ 1, WRITE 2."""
    assert [int(m) for m in TransferMethod] == [0, 1, 2, 3]
    assert [m.name for m in TransferMethod] == ["BUFFERED", "IN_DIRECT", "OUT_DIRECT", "NEITHER"]
    assert (FileAccess.ANY, FileAccess.READ, FileAccess.WRITE) == (0, 1, 2)


# -- major functions and flags (11.2 to 11.4, 1.2) ----------------------------------------------

IRP_MJ: dict[str, int] = {
    "CREATE": 0x00,
    "CREATE_NAMED_PIPE": 0x01,
    "CLOSE": 0x02,
    "READ": 0x03,
    "WRITE": 0x04,
    "QUERY_INFORMATION": 0x05,
    "SET_INFORMATION": 0x06,
    "QUERY_EA": 0x07,
    "SET_EA": 0x08,
    "FLUSH_BUFFERS": 0x09,
    "QUERY_VOLUME_INFORMATION": 0x0A,
    "SET_VOLUME_INFORMATION": 0x0B,
    "DIRECTORY_CONTROL": 0x0C,
    "FILE_SYSTEM_CONTROL": 0x0D,
    "DEVICE_CONTROL": 0x0E,
    "INTERNAL_DEVICE_CONTROL": 0x0F,
    "SHUTDOWN": 0x10,
    "LOCK_CONTROL": 0x11,
    "CLEANUP": 0x12,
    "CREATE_MAILSLOT": 0x13,
    "QUERY_SECURITY": 0x14,
    "SET_SECURITY": 0x15,
    "POWER": 0x16,
    "SYSTEM_CONTROL": 0x17,
    "DEVICE_CHANGE": 0x18,
    "QUERY_QUOTA": 0x19,
    "SET_QUOTA": 0x1A,
    "PNP": 0x1B,
}


@pytest.mark.parametrize(("name", "value"), list(IRP_MJ.items()))
def test_irp_major_values(name: str, value: int) -> None:
    """11.2: IRP_MJ_* codes."""
    assert IrpMajor[name] == value


def test_irp_major_table_has_28_entries_and_scsi_alias() -> None:
    """11.2: INTERNAL_DEVICE_CONTROL = SCSI; PNP = MAXIMUM_FUNCTION; the table has 28 entries."""
    assert IrpMajor["SCSI"] is IrpMajor.INTERNAL_DEVICE_CONTROL
    assert len(IrpMajor) == 28
    assert max(IrpMajor) is IrpMajor.PNP
    assert int(IrpMajor.PNP) == 0x1B
    assert sorted(int(m) for m in IrpMajor) == list(range(28))
    assert len(airp.Driver().major_function) == 28


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        (IrpFlags.NOCACHE, 0x1),
        (IrpFlags.PAGING_IO, 0x2),
        (IrpFlags.MOUNT_COMPLETION, 0x2),
        (IrpFlags.SYNCHRONOUS_API, 0x4),
        (IrpFlags.ASSOCIATED_IRP, 0x8),
        (IrpFlags.BUFFERED_IO, 0x10),
        (IrpFlags.DEALLOCATE_BUFFER, 0x20),
        (IrpFlags.INPUT_OPERATION, 0x40),
        (IrpFlags.SYNCHRONOUS_PAGING_IO, 0x40),
        (IrpFlags.CREATE_OPERATION, 0x80),
        (IrpFlags.READ_OPERATION, 0x100),
        (IrpFlags.WRITE_OPERATION, 0x200),
        (IrpFlags.CLOSE_OPERATION, 0x400),
        (IrpFlags.DEFER_IO_COMPLETION, 0x800),
        (IrpFlags.OB_QUERY_NAME, 0x1000),
        (IrpFlags.HOLD_DEVICE_QUEUE, 0x2000),
        (DeviceFlags.BUFFERED_IO, 0x4),
        (DeviceFlags.EXCLUSIVE, 0x8),
        (DeviceFlags.DIRECT_IO, 0x10),
        (DeviceFlags.DEVICE_INITIALIZING, 0x80),
        (DeviceFlags.POWER_PAGABLE, 0x2000),
        (StackControl.PENDING_RETURNED, 0x01),
        (StackControl.ERROR_RETURNED, 0x02),
        (StackControl.INVOKE_ON_CANCEL, 0x20),
        (StackControl.INVOKE_ON_SUCCESS, 0x40),
        (StackControl.INVOKE_ON_ERROR, 0x80),
    ],
    ids=lambda item: getattr(item, "name", None) or hex(item),
)
def test_flag_values(flag: int, value: int) -> None:
    """11.4 (IRP and device flags) and 1.2 (SL_* control bits)."""
    assert flag == value


@pytest.mark.parametrize(
    ("minor", "value"),
    [
        (PnpMinor.START_DEVICE, 0x00),
        (PnpMinor.QUERY_REMOVE_DEVICE, 0x01),
        (PnpMinor.REMOVE_DEVICE, 0x02),
        (PnpMinor.CANCEL_REMOVE_DEVICE, 0x03),
        (PnpMinor.STOP_DEVICE, 0x04),
        (PnpMinor.QUERY_DEVICE_RELATIONS, 0x07),
        (PnpMinor.FILTER_RESOURCE_REQUIREMENTS, 0x0D),
        (PnpMinor.READ_CONFIG, 0x0F),
        (PnpMinor.QUERY_ID, 0x13),
        (PnpMinor.SURPRISE_REMOVAL, 0x17),
        (PnpMinor.DEVICE_ENUMERATED, 0x19),
        (PowerMinor.WAIT_WAKE, 0x00),
        (PowerMinor.POWER_SEQUENCE, 0x01),
        (PowerMinor.SET_POWER, 0x02),
        (PowerMinor.QUERY_POWER, 0x03),
    ],
    ids=lambda item: getattr(item, "name", None) or hex(item),
)
def test_minor_function_values(minor: int, value: int) -> None:
    """11.3: IRP_MN_* codes of PnP and power."""
    assert minor == value
