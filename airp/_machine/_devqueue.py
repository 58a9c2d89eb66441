"""KDEVICE_QUEUE: a device queue with Windows' Busy semantics (reference 7.1).

Part of the sans-I/O machine: no event loop, no anyio.  StartIo queues (:mod:`airp._shell._startio`)
are built on it, and a driver that writes its own StartIo logic can use it directly, exactly as
Windows drivers use ``KeInsertDeviceQueue`` and ``KeRemoveDeviceQueue``.

The queue does not only hold entries, it also says whether the device is *busy*:

- the first insert into an idle queue does **not** enqueue the entry; it marks the queue busy and
  returns ``False``, which means "the device was idle: start this one now";
- while busy, inserts enqueue and return ``True``;
- a remove takes the next entry and leaves the queue busy (the device now works on that entry);
  a remove that finds the queue empty makes it idle and returns ``None``.

Where ReactOS and Microsoft differ, airp follows Microsoft (the [DIFF] notes of reference 7.1):
removal by key wraps around to the head when no entry has a key at or above the one asked for,
and an insert by key records "inserted" exactly as a plain insert does.

Misuse that Windows only catches with an ``ASSERT`` in checked builds (and otherwise lets corrupt
the list) raises :class:`DeviceQueueError` here, at the offending call.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

__all__ = ["MAX_SORT_KEY", "DeviceQueue", "DeviceQueueError"]

#: Sort keys are ``ULONG``: 0 .. 0xFFFFFFFF.
MAX_SORT_KEY = 0xFFFF_FFFF

T = TypeVar("T", bound=Hashable)


class DeviceQueueError(RuntimeError):
    """A device queue was used in a way Windows does not allow.

    Windows checks these rules only with ``ASSERT`` (checked builds) or not at all, and a free
    build corrupts the queue's list instead; airp raises at once:

    - removing from a queue that is not busy (``KeRemoveDeviceQueue``,
      ``KeRemoveByKeyDeviceQueue`` and ``KeRemoveEntryDeviceQueue`` all ``ASSERT(Busy)``), which
      is also what starting the next packet on an idle device does;
    - inserting an entry that is already in the queue (its list entry would be linked twice).
    """


def _check_key(key: object) -> int:
    if type(key) is not int:
        if not isinstance(key, int) or isinstance(key, bool):
            raise TypeError(f"a device-queue sort key is an int (ULONG), got {type(key).__name__} {key!r}")
        key = int(key)
    if not 0 <= key <= MAX_SORT_KEY:
        raise ValueError(f"a device-queue sort key is a ULONG (0..0xFFFFFFFF), got {key!r}")
    return key


class DeviceQueue(Generic[T]):
    """``KDEVICE_QUEUE``: the entries waiting for a device, and whether the device is busy.

    Entries are the objects queued (IRPs, for StartIo); each is in a queue at most once and is
    found again by identity (any hashable object works; IRPs hash by identity).  Each entry has a
    sort key, given by :meth:`insert_by_key`; a plain :meth:`insert` gives it key 0.

    All operations are synchronous and O(1) at the ends of the queue; keyed inserts and removals
    use a binary search while the keys are in order (always, unless plain and keyed inserts are
    mixed) and a scan otherwise.

    Departures from ``KDEVICE_QUEUE``:

    - an entry's "inserted" flag is per queue: ``entry in queue``.  Windows keeps one flag in the
      IRP's single queue entry, so an IRP can never be in two device queues at once; airp does not
      detect that mistake across queues, only within one;
    - a plain insert records sort key 0, where Windows leaves whatever the entry held; the key
      matters only when plain and keyed inserts are mixed in one queue.
    """

    __slots__ = ("_busy", "_entries", "_keys", "_sorted")

    def __init__(self) -> None:
        self._entries: deque[T] = deque()
        self._keys: dict[T, int] = {}
        self._busy = False
        # True while the keys of _entries are in ascending order (binary search allowed).
        self._sorted = True

    # -- state ---------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """``Busy``: set by an insert into an idle queue, cleared by a remove from an empty one."""
        return self._busy

    def __len__(self) -> int:
        """How many entries are waiting (the entry the device is working on is not counted)."""
        return len(self._entries)

    def __bool__(self) -> bool:
        """True if any entry is waiting.  Use :attr:`busy` to ask whether the device is busy."""
        return bool(self._entries)

    def __contains__(self, entry: object) -> bool:
        """``Entry->Inserted``: True while *entry* is waiting in this queue."""
        try:
            return entry in self._keys
        except TypeError:  # unhashable: cannot be an entry
            return False

    def __iter__(self) -> Iterator[T]:
        """The waiting entries, head first (a snapshot: the queue may change while iterating)."""
        return iter(tuple(self._entries))

    def sort_key(self, entry: T) -> int:
        """The sort key *entry* was inserted with (0 for a plain insert).

        :raises KeyError: if *entry* is not in this queue.
        """
        try:
            return self._keys[entry]
        except KeyError:
            raise KeyError(f"{entry!r} is not in this device queue") from None

    def __repr__(self) -> str:
        state = "busy" if self._busy else "idle"
        return f"<DeviceQueue {state}, {len(self._entries)} waiting>"

    # -- inserting -----------------------------------------------------------------------------

    def _check_new(self, entry: T) -> None:
        if entry in self._keys:
            raise DeviceQueueError(
                f"{entry!r} is already in this device queue: an entry can be inserted only once (Windows would link"
                " its list entry twice and corrupt the queue)"
            )

    def insert(self, entry: T) -> bool:
        """``KeInsertDeviceQueue``: queue *entry* at the tail if the device is busy.

        :returns: ``False`` if the queue was idle: it is now busy, *entry* was **not** queued, and the
            caller must start it now.  ``True`` if *entry* was queued behind the others.
        :raises DeviceQueueError: if *entry* is already in the queue.
        """
        if not self._busy:
            self._busy = True
            return False
        if entry in self._keys:  # _check_new's test inline: insert runs once per queued packet
            self._check_new(entry)
        entries = self._entries
        if entries and self._sorted and self._keys[entries[-1]] > 0:
            self._sorted = False
        self._keys[entry] = 0
        entries.append(entry)
        return True

    def insert_by_key(self, entry: T, key: int) -> bool:
        """``KeInsertByKeyDeviceQueue``: queue *entry* in ascending key order if the device is busy.

        Among equal keys the order is first in, first out: *entry* goes before the first entry whose
        key is strictly greater than *key* (at the tail if none is).

        :param key: the sort key, a ULONG (for disks, typically the sector).
        :returns: ``False`` if the queue was idle (now busy, *entry* not queued: start it now);
            ``True`` if *entry* was queued.
        :raises DeviceQueueError: if *entry* is already in the queue.
        :raises TypeError: if *key* is not an int.
        :raises ValueError: if *key* is not a ULONG.
        """
        key = _check_key(key)
        if not self._busy:
            self._busy = True
            return False
        self._check_new(entry)
        entries = self._entries
        keys = self._keys
        keys[entry] = key
        if not entries or key >= keys[entries[-1]]:
            entries.append(entry)
        elif self._sorted:
            entries.insert(bisect_right(entries, key, key=keys.__getitem__), entry)
        else:
            for index, other in enumerate(entries):
                if keys[other] > key:
                    entries.insert(index, entry)
                    break
        return True

    # -- removing ------------------------------------------------------------------------------

    def _not_busy(self, operation: str) -> DeviceQueueError:
        return DeviceQueueError(
            f"{operation} on a device queue that is not busy: Windows asserts Busy here; nothing was inserted since the"
            " queue last went idle, so there is no packet to remove or start"
        )

    def remove(self) -> T | None:
        """``KeRemoveDeviceQueue``: take the head entry, for the device to work on next.

        :returns: the head entry (the queue stays busy), or ``None`` if no entry was waiting: the
            queue is then idle, and the next insert will say "start it now".
        :raises DeviceQueueError: if the queue is not busy.
        """
        if not self._busy:
            raise self._not_busy("remove")
        entries = self._entries
        if not entries:
            self._busy = False
            return None
        entry = entries.popleft()
        del self._keys[entry]
        if not entries:
            self._sorted = True
        return entry

    def remove_by_key(self, key: int) -> T | None:
        """``KeRemoveByKeyDeviceQueue``: take the first entry whose key is at least *key*.

        If no entry has such a key, take the head: the search wraps around, which gives disk
        drivers their elevator (C-SCAN) order.  Microsoft's semantics; ReactOS returns the head
        whenever the *last* key equals *key* (reference 7.1 [DIFF]).

        :returns: the entry (the queue stays busy), or ``None`` if none was waiting (the queue is
            then idle).
        :raises DeviceQueueError: if the queue is not busy.
        :raises TypeError: if *key* is not an int.
        :raises ValueError: if *key* is not a ULONG.
        """
        key = _check_key(key)
        if not self._busy:
            raise self._not_busy("remove_by_key")
        return self._take_by_key(key)

    def remove_by_key_if_busy(self, key: int) -> T | None:
        """``KeRemoveByKeyDeviceQueueIfBusy``: :meth:`remove_by_key`, but an idle queue is no error.

        :returns: the entry, or ``None`` if the queue was idle or empty (it is idle afterwards).
        :raises TypeError: if *key* is not an int.
        :raises ValueError: if *key* is not a ULONG.
        """
        key = _check_key(key)
        if not self._busy:
            return None
        return self._take_by_key(key)

    def _take_by_key(self, key: int) -> T | None:
        entries = self._entries
        if not entries:
            self._busy = False
            return None
        keys = self._keys
        if self._sorted:
            index = bisect_left(entries, key, key=keys.__getitem__)
            if index == len(entries):
                index = 0
        else:
            index = 0
            for position, other in enumerate(entries):
                if keys[other] >= key:
                    index = position
                    break
        if index == 0:
            entry = entries.popleft()
        else:
            entry = entries[index]
            del entries[index]
        del keys[entry]
        if not entries:
            self._sorted = True
        return entry

    def remove_entry(self, entry: T) -> bool:
        """``KeRemoveEntryDeviceQueue``: take *entry* out of the queue if it is still waiting.

        What a cancel routine calls: ``True`` means the entry was still queued and the caller now
        owns it (and must complete it); ``False`` means it was already removed, typically because
        the device has started working on it.  Never changes :attr:`busy`.

        :raises DeviceQueueError: if the queue is not busy.
        """
        if not self._busy:
            raise self._not_busy("remove_entry")
        if not self.__contains__(entry):
            return False
        del self._keys[entry]
        self._entries.remove(entry)
        if not self._entries:
            self._sorted = True
        return True
