"""DeviceQueue (KDEVICE_QUEUE, reference 7.1): examples, bad input, and a stateful property test
against a reference model that follows the reference text literally."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, precondition, rule

from airp import DeviceQueue, DeviceQueueError, Irp

# -- examples -----------------------------------------------------------------------------------


def test_first_insert_into_idle_queue_marks_busy_and_does_not_enqueue() -> None:
    q: DeviceQueue[str] = DeviceQueue()
    assert not q.busy
    assert q.insert("a") is False
    assert q.busy
    assert len(q) == 0
    assert "a" not in q
    assert q.insert("b") is True
    assert "b" in q
    assert list(q) == ["b"]


def test_remove_pops_head_and_empty_remove_makes_idle() -> None:
    q: DeviceQueue[str] = DeviceQueue()
    q.insert("current")
    q.insert("x")
    q.insert("y")
    assert q.remove() == "x"
    assert q.busy
    assert q.remove() == "y"
    assert q.busy  # still working on "y"
    assert q.remove() is None
    assert not q.busy
    # idle again: the next insert says "start it now"
    assert q.insert("z") is False


def test_insert_by_key_ascending_fifo_among_equal_keys() -> None:
    q: DeviceQueue[str] = DeviceQueue()
    q.insert_by_key("current", 50)
    for name, key in [("a", 30), ("b", 10), ("c", 30), ("d", 20), ("e", 10), ("f", 99)]:
        assert q.insert_by_key(name, key) is True
    assert list(q) == ["b", "e", "d", "a", "c", "f"]
    assert [q.sort_key(e) for e in q] == [10, 10, 20, 30, 30, 99]


def test_remove_by_key_takes_first_at_or_above_and_wraps_around() -> None:
    q: DeviceQueue[str] = DeviceQueue()
    q.insert_by_key("current", 0)
    for name, key in [("a", 10), ("b", 20), ("c", 20), ("d", 30)]:
        q.insert_by_key(name, key)
    assert q.remove_by_key(15) == "b"  # first with key >= 15
    assert q.remove_by_key(20) == "c"  # equal counts
    assert q.remove_by_key(31) == "a"  # none >= 31: wrap around to the head
    assert q.remove_by_key(30) == "d"
    assert q.remove_by_key(0) is None
    assert not q.busy


def test_remove_by_key_follows_microsoft_when_last_key_equals_the_key() -> None:
    # ReactOS returns the head when the last key <= K; Microsoft returns the first entry >= K.
    q: DeviceQueue[str] = DeviceQueue()
    q.insert_by_key("current", 0)
    q.insert_by_key("low", 5)
    q.insert_by_key("top", 40)
    assert q.remove_by_key(40) == "top"


def test_remove_by_key_if_busy_on_idle_queue_returns_none() -> None:
    q: DeviceQueue[str] = DeviceQueue()
    assert q.remove_by_key_if_busy(7) is None
    assert not q.busy


def test_remove_entry_for_cancel_routines() -> None:
    q: DeviceQueue[str] = DeviceQueue()
    q.insert("current")
    q.insert("a")
    q.insert("b")
    assert q.remove_entry("a") is True
    assert "a" not in q
    assert q.remove_entry("a") is False  # already gone
    assert q.remove_entry("current") is False  # being worked on, never queued
    assert q.busy
    assert q.remove_entry("b") is True
    assert q.busy  # remove_entry never changes Busy, even when the queue empties


def test_irps_are_entries_by_identity() -> None:
    q: DeviceQueue[Irp] = DeviceQueue()
    first, second, third = Irp(1), Irp(1), Irp(1)
    q.insert(first)
    q.insert(second)
    q.insert_by_key(third, 0)
    assert second in q
    assert first not in q
    assert q.remove() is second
    assert q.remove() is third


def test_mixed_plain_and_keyed_inserts_follow_the_scan_rules() -> None:
    q: DeviceQueue[str] = DeviceQueue()
    q.insert("current")
    q.insert_by_key("k50", 50)
    q.insert("plain")  # key 0 at the tail: keys are now out of order
    q.insert_by_key("k30", 30)  # 30 >= the last key (0): at the tail
    q.insert_by_key("k20", 20)  # below the last key: before the first entry with a key > 20
    assert list(q) == ["k20", "k50", "plain", "k30"]
    assert q.remove_by_key(25) == "k50"  # the first entry (from the head) with a key >= 25
    assert q.remove_by_key(31) == "k20"  # none >= 31 left: the head


# -- bad input ----------------------------------------------------------------------------------


def test_remove_from_idle_queue_is_an_error() -> None:
    q: DeviceQueue[str] = DeviceQueue()
    with pytest.raises(DeviceQueueError, match="not busy"):
        q.remove()
    with pytest.raises(DeviceQueueError, match="not busy"):
        q.remove_by_key(3)
    with pytest.raises(DeviceQueueError, match="not busy"):
        q.remove_entry("x")


def test_inserting_an_entry_twice_is_an_error() -> None:
    q: DeviceQueue[str] = DeviceQueue()
    q.insert("current")
    q.insert("a")
    with pytest.raises(DeviceQueueError, match="already in this device queue"):
        q.insert("a")
    with pytest.raises(DeviceQueueError, match="already in this device queue"):
        q.insert_by_key("a", 3)
    assert list(q) == ["a"]


@pytest.mark.parametrize("key", [-1, 0x1_0000_0000])
def test_sort_key_out_of_range(key: int) -> None:
    q: DeviceQueue[str] = DeviceQueue()
    with pytest.raises(ValueError, match="ULONG"):
        q.insert_by_key("a", key)
    assert not q.busy  # nothing happened


@pytest.mark.parametrize("key", [1.5, "3", True, None])
def test_sort_key_not_an_int(key: object) -> None:
    q: DeviceQueue[str] = DeviceQueue()
    with pytest.raises(TypeError, match="sort key"):
        q.insert_by_key("a", key)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="sort key"):
        q.remove_by_key_if_busy(key)  # type: ignore[arg-type]


def test_sort_key_of_missing_entry() -> None:
    q: DeviceQueue[str] = DeviceQueue()
    with pytest.raises(KeyError, match="not in this device queue"):
        q.sort_key("nope")
    assert "x" not in q
    assert [] not in q  # unhashable: simply not an entry


# -- the reference model ----------------------------------------------------------------------


class ModelQueue:
    """Reference 7.1 written out literally: a list of [entry, key], a Busy flag, linear scans."""

    def __init__(self) -> None:
        self.items: list[tuple[int, int]] = []
        self.busy = False

    def insert(self, entry: int) -> bool:
        if not self.busy:
            self.busy = True
            return False
        self.items.append((entry, 0))
        return True

    def insert_by_key(self, entry: int, key: int) -> bool:
        if not self.busy:
            self.busy = True
            return False
        if not self.items or key >= self.items[-1][1]:
            self.items.append((entry, key))
            return True
        for i, (_, k) in enumerate(self.items):
            if k > key:
                self.items.insert(i, (entry, key))
                return True
        raise AssertionError("unreachable")

    def remove(self) -> int | None:
        assert self.busy
        if not self.items:
            self.busy = False
            return None
        return self.items.pop(0)[0]

    def remove_by_key(self, key: int) -> int | None:
        assert self.busy
        if not self.items:
            self.busy = False
            return None
        for i, (_, k) in enumerate(self.items):
            if k >= key:
                return self.items.pop(i)[0]
        return self.items.pop(0)[0]

    def remove_entry(self, entry: int) -> bool:
        assert self.busy
        for i, (e, _) in enumerate(self.items):
            if e == entry:
                del self.items[i]
                return True
        return False


keys = st.integers(min_value=0, max_value=12) | st.sampled_from([0, 0xFFFF_FFFF])


class DeviceQueueMachine(RuleBasedStateMachine):
    """DeviceQueue against ModelQueue: same results, same order, same Busy, same errors."""

    queued = Bundle("queued")

    def __init__(self) -> None:
        super().__init__()
        self.queue: DeviceQueue[int] = DeviceQueue()
        self.model = ModelQueue()
        self.counter = 0

    def _new(self) -> int:
        self.counter += 1
        return self.counter

    @rule(target=queued)
    def insert(self) -> int:
        entry = self._new()
        assert self.queue.insert(entry) == self.model.insert(entry)
        return entry

    @rule(target=queued, key=keys)
    def insert_by_key(self, key: int) -> int:
        entry = self._new()
        assert self.queue.insert_by_key(entry, key) == self.model.insert_by_key(entry, key)
        return entry

    @rule(entry=queued, key=keys)
    def insert_again(self, entry: int, key: int) -> None:
        if entry in self.queue:
            with pytest.raises(DeviceQueueError):
                self.queue.insert_by_key(entry, key)
        # an entry that is not waiting (started, removed) may be inserted again: covered by insert

    @precondition(lambda self: self.model.busy)
    @rule()
    def remove(self) -> None:
        assert self.queue.remove() == self.model.remove()

    @precondition(lambda self: self.model.busy)
    @rule(key=keys)
    def remove_by_key(self, key: int) -> None:
        assert self.queue.remove_by_key(key) == self.model.remove_by_key(key)

    @rule(key=keys)
    def remove_by_key_if_busy(self, key: int) -> None:
        expected = self.model.remove_by_key(key) if self.model.busy else None
        assert self.queue.remove_by_key_if_busy(key) == expected

    @precondition(lambda self: self.model.busy)
    @rule(entry=consumes(queued))
    def remove_entry(self, entry: int) -> None:
        assert self.queue.remove_entry(entry) == self.model.remove_entry(entry)

    @precondition(lambda self: not self.model.busy)
    @rule(key=keys)
    def remove_when_idle_is_an_error(self, key: int) -> None:
        with pytest.raises(DeviceQueueError):
            self.queue.remove()
        with pytest.raises(DeviceQueueError):
            self.queue.remove_by_key(key)
        with pytest.raises(DeviceQueueError):
            self.queue.remove_entry(0)

    @invariant()
    def same_state(self) -> None:
        assert self.queue.busy == self.model.busy
        assert list(self.queue) == [e for e, _ in self.model.items]
        assert [self.queue.sort_key(e) for e in self.queue] == [k for _, k in self.model.items]
        assert len(self.queue) == len(self.model.items)
        for e, _ in self.model.items:
            assert e in self.queue


DeviceQueueMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)
TestDeviceQueueModel = DeviceQueueMachine.TestCase
