"""A Principal's remembered answers are the answers it would compute afresh."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from roomcast.permissions import CACHE_ROOMS, Principal, room_matches

_CHARS = st.sampled_from("ab:*?[]x")
patterns = st.lists(st.text(_CHARS, max_size=6), max_size=4).map(tuple)
rooms = st.text(st.sampled_from("ab:x[]?*"), max_size=8)


def principal(subscribe: tuple[str, ...], publish: tuple[str, ...], user: str = "u"
              ) -> Principal:
    return Principal(user, subscribe, publish, {}, 0.0, None)


@settings(max_examples=300)
@given(patterns, patterns, st.lists(rooms, min_size=1, max_size=20))
def test_cached_answers_equal_uncached_ones(subscribe: tuple[str, ...],
                                            publish: tuple[str, ...],
                                            asked: list[str]) -> None:
    cached = principal(subscribe, publish)
    for room in asked + asked:  # every room asked twice: the second answer is remembered
        expect_sub = room == "user:u" or room_matches(subscribe, room)
        assert cached.can_subscribe(room) == expect_sub
        assert cached.can_publish(room) == room_matches(publish, room)


def test_the_personal_room_stays_allowed_when_remembered() -> None:
    p = principal((), ())
    assert p.can_subscribe("user:u") and p.can_subscribe("user:u")
    assert not p.can_publish("user:u") and not p.can_publish("user:u")


def test_the_cache_is_bounded_and_answers_stay_right_past_it() -> None:
    p = principal(("room:*",), ("room:1*",))
    for i in range(CACHE_ROOMS * 3):
        assert p.can_subscribe(f"room:{i}")
        assert p.can_publish(f"room:{i}") == str(i).startswith("1")
        assert len(p._answers) <= CACHE_ROOMS
    assert not p.can_subscribe("other:1")


def test_the_cache_is_not_part_of_equality_or_repr() -> None:
    a, b = principal(("x:*",), ()), principal(("x:*",), ())
    a.can_subscribe("x:1")
    assert a == b
    assert "_answers" not in repr(a)
