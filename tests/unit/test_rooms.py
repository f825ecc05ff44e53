"""RoutingTable: subscriptions, filters and local presence counts (contract §4, §5)."""

from __future__ import annotations

from typing import Any

import pytest

from roomcast.rooms import RoutingTable, json_equal


def table() -> RoutingTable[str]:
    return RoutingTable()


def receivers(t: RoutingTable[str], room: str, event: str | None = None,
              data: Any = None) -> list[str]:
    return [s.subscriber for s in t.recipients(room, event, lambda: data)]


# ------------------------------------------------------------------ subscribe / unsubscribe
def test_a_first_subscription_is_new_and_its_user_joins() -> None:
    t = table()
    sub, is_new, joined = t.subscribe("c1", "room", "alice", {"name": "A"})
    assert (is_new, joined) == (True, True)
    assert sub.subscriber == "c1" and sub.user_id == "alice"
    assert t.get("c1", "room") is sub
    assert t.subscriptions("c1") == {"room": sub}
    assert receivers(t, "room") == ["c1"]


def test_subscribing_again_replaces_the_filters_and_is_not_new() -> None:
    t = table()
    t.subscribe("c1", "room", "alice", events=["a"], where={"k": 1}, presence=True)
    sub, is_new, joined = t.subscribe("c1", "room", "alice", events=["b"])
    assert (is_new, joined) == (False, False)
    assert sub.events == frozenset({"b"})
    assert sub.where is None
    assert sub.presence is False
    assert t.get("c1", "room") is sub
    assert t.presence("room")["alice"].connections == 1
    assert receivers(t, "room", "a") == []
    assert receivers(t, "room", "b") == ["c1"]


def test_subscribing_again_without_filters_removes_them() -> None:
    t = table()
    t.subscribe("c1", "room", "alice", events=["a"], where={"k": 1})
    t.subscribe("c1", "room", "alice")
    assert receivers(t, "room", "other", {"k": 2}) == ["c1"]


def test_unsubscribe_removes_the_subscription_and_the_empty_room() -> None:
    t = table()
    t.subscribe("c1", "room", "alice")
    assert t.unsubscribe("c1", "room") == (True, True)
    assert t.get("c1", "room") is None
    assert "room" not in t.rooms
    assert "c1" not in t.by_subscriber
    assert "room" not in t.present
    assert receivers(t, "room") == []


def test_unsubscribe_of_a_room_not_subscribed_reports_nothing() -> None:
    t = table()
    assert t.unsubscribe("c1", "room") == (False, False)
    t.subscribe("c2", "room", "bob")
    assert t.unsubscribe("c1", "room") == (False, False)
    assert receivers(t, "room") == ["c2"]


def test_unsubscribe_leaves_other_rooms_of_the_subscriber() -> None:
    t = table()
    t.subscribe("c1", "a", "alice")
    t.subscribe("c1", "b", "alice")
    t.unsubscribe("c1", "a")
    assert list(t.subscriptions("c1")) == ["b"]
    assert receivers(t, "b") == ["c1"]


def test_drop_removes_every_subscription_and_reports_who_left() -> None:
    t = table()
    t.subscribe("c1", "a", "alice")
    t.subscribe("c1", "b", "alice")
    t.subscribe("c2", "b", "alice")
    dropped = t.drop("c1")
    assert sorted(dropped) == [("a", "alice", True), ("b", "alice", False)]
    assert t.subscriptions("c1") == {}
    assert receivers(t, "a") == [] and receivers(t, "b") == ["c2"]
    assert t.drop("c1") == []


def test_recipients_come_in_subscription_order() -> None:
    t = table()
    for name in ["c3", "c1", "c2"]:
        t.subscribe(name, "room", name)
    assert receivers(t, "room") == ["c3", "c1", "c2"]


# ------------------------------------------------------------------ filters
def test_events_filter_admits_only_listed_events() -> None:
    t = table()
    t.subscribe("c1", "room", "alice", events=["task.created", "task.done"])
    t.subscribe("c2", "room", "bob")
    assert receivers(t, "room", "task.created") == ["c1", "c2"]
    assert receivers(t, "room", "task.done") == ["c1", "c2"]
    assert receivers(t, "room", "task.deleted") == ["c2"]
    assert receivers(t, "room", None) == ["c2"]


def test_where_filter_admits_only_equal_fields() -> None:
    t = table()
    t.subscribe("c1", "room", "alice", where={"account_id": "123", "kind": "a"})
    assert receivers(t, "room", None, {"account_id": "123", "kind": "a", "x": 1}) == ["c1"]
    assert receivers(t, "room", None, {"account_id": "123", "kind": "b"}) == []
    assert receivers(t, "room", None, {"account_id": "123"}) == []
    assert receivers(t, "room", None, {"account_id": 123, "kind": "a"}) == []


def test_where_filter_refuses_data_that_is_not_an_object() -> None:
    t = table()
    t.subscribe("c1", "room", "alice", where={"k": 1})
    for data in [None, 1, "k", [1], True]:
        assert receivers(t, "room", None, data) == []


def test_where_null_needs_the_key_present_and_null() -> None:
    t = table()
    t.subscribe("c1", "room", "alice", where={"k": None})
    assert receivers(t, "room", None, {"k": None}) == ["c1"]
    assert receivers(t, "room", None, {}) == []


def test_where_true_does_not_match_1_and_false_does_not_match_0() -> None:
    t = table()
    t.subscribe("c_true", "room", "alice", where={"flag": True})
    t.subscribe("c_one", "room", "bob", where={"flag": 1})
    assert receivers(t, "room", None, {"flag": True}) == ["c_true"]
    assert receivers(t, "room", None, {"flag": 1}) == ["c_one"]
    assert receivers(t, "room", None, {"flag": 1.0}) == ["c_one"]
    t.subscribe("c_false", "room", "carol", where={"flag": False})
    assert receivers(t, "room", None, {"flag": 0}) == []
    assert receivers(t, "room", None, {"flag": False}) == ["c_false"]


def test_events_and_where_must_both_pass() -> None:
    t = table()
    t.subscribe("c1", "room", "alice", events=["e"], where={"k": 1})
    assert receivers(t, "room", "e", {"k": 1}) == ["c1"]
    assert receivers(t, "room", "f", {"k": 1}) == []
    assert receivers(t, "room", "e", {"k": 2}) == []


def test_data_is_not_read_when_no_filter_needs_it() -> None:
    t = table()
    t.subscribe("c1", "room", "alice")
    t.subscribe("c2", "room", "bob", events=["e"])

    def explode() -> Any:
        raise AssertionError("data decoded without a where filter")

    assert [s.subscriber for s in t.recipients("room", "e", explode)] == ["c1", "c2"]


@pytest.mark.parametrize(("a", "b", "equal"), [
    (True, 1, False), (1, True, False), (False, 0, False), (0, False, False),
    (True, True, True), (None, None, True), (None, False, False),
    (1, 1.0, True), (2.5, 2.5, True), (1, 2, False), ("1", 1, False),
    ([1, True], [1, True], True), ([1, True], [1, 1], False), ([1], [1, 1], False),
    ({"a": [1, {"b": True}]}, {"a": [1, {"b": True}]}, True),
    ({"a": [1, {"b": True}]}, {"a": [1, {"b": 1}]}, False),
    ({"a": 1}, {"a": 1, "b": 2}, False), ({"a": 1}, [1], False), ("x", "x", True),
])
def test_json_equal(a: Any, b: Any, equal: bool) -> None:
    assert json_equal(a, b) is equal
    assert json_equal(b, a) is equal


# ------------------------------------------------------------------ presence counts
def test_presence_counts_connections_per_user_with_joined_and_left_transitions() -> None:
    t = table()
    assert t.subscribe("c1", "room", "alice", {"n": 1})[2] is True   # joined
    assert t.subscribe("c2", "room", "alice", {"n": 1})[2] is False  # already present
    assert t.subscribe("c3", "room", "bob")[2] is True
    assert t.presence("room")["alice"].connections == 2
    assert t.presence("room")["alice"].info == {"n": 1}
    assert t.presence("room")["bob"].connections == 1
    assert t.unsubscribe("c1", "room") == (True, False)  # alice still has c2
    assert t.presence("room")["alice"].connections == 1
    assert t.unsubscribe("c2", "room") == (True, True)   # alice left
    assert "alice" not in t.presence("room")
    assert t.drop("c3") == [("room", "bob", True)]
    assert t.presence("room") == {}


def test_a_resubscribe_does_not_count_twice_in_presence() -> None:
    t = table()
    t.subscribe("c1", "room", "alice")
    t.subscribe("c1", "room", "alice", events=["x"])
    assert t.presence("room")["alice"].connections == 1
    assert t.unsubscribe("c1", "room") == (True, True)


def test_presence_is_per_room() -> None:
    t = table()
    t.subscribe("c1", "a", "alice")
    t.subscribe("c1", "b", "alice")
    assert t.unsubscribe("c1", "a") == (True, True)
    assert t.presence("b")["alice"].connections == 1


def test_watchers_are_the_subscriptions_that_asked_for_presence() -> None:
    t = table()
    t.subscribe("c1", "room", "alice", presence=True)
    t.subscribe("c2", "room", "bob")
    assert [s.subscriber for s in t.watchers("room")] == ["c1"]
    t.subscribe("c1", "room", "alice")  # replaced without presence
    assert t.watchers("room") == []
    assert t.watchers("nowhere") == []
