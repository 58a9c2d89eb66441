"""The exception a requester sees when an I/O request fails."""

from __future__ import annotations

from ._status import NtStatus

__all__ = ["NtStatusError"]


class NtStatusError(Exception):
    """An I/O request finished with a status that is not success.

    Raised by the requester's calls (:meth:`airp.FileHandle.read` and friends) for errors and for
    warnings alike.  For a warning such as STATUS_BUFFER_OVERFLOW the data was still copied back
    (reference 5.7) and is available as :attr:`data`.

    :ivar status: the IRP's final status.
    :ivar information: the IRP's final information field.
    :ivar data: for warnings on read-like requests, the bytes copied back; otherwise ``None``.
    """

    def __init__(self, status: int, message: str = "", *, information: int = 0, data: bytes | None = None) -> None:
        self.status = NtStatus(status)
        self.information = information
        self.data = data
        text = str(self.status)
        if message:
            text = f"{message}: {text}"
        super().__init__(text)
