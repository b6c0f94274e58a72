"""Prefix routing, next hops, scopes and division history (hypothesis for the router)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import Alliance, Item
from gateway.divisions import resolve
from gateway.errors import NotFound, PermissionDenied, Unavailable
from gateway.routing import Destination, RouteTable, Scope, admit

prefixes = st.from_regex(r"[0-9]{1,6}", fullmatch=True)
divisions = st.from_regex(r"[0-9]{6}", fullmatch=True)


@given(st.lists(st.tuples(prefixes, st.sampled_from(["a", "b", "c"])), max_size=30), divisions)
def test_longest_prefix_wins(entries: list[tuple[str, str]], division: str) -> None:
    dests = [Destination(p, "gw", f"{g}-{p}") for p, g in entries]
    table = RouteTable("gw", dests, {"gw": ()})
    matches = [d for d in dests if division.startswith(d.prefix)]
    found = table.lookup(division)
    if not matches:
        assert found is None
        return
    assert found is not None
    assert len(found.prefix) == max(len(d.prefix) for d in matches)
    assert division.startswith(found.prefix)


def test_next_hop_is_the_first_step_of_a_shortest_path() -> None:
    links = {"a": ("b",), "b": ("a", "c"), "c": ("b", "d"), "d": ("c",), "e": ("a",)}
    dests = [Destination("31", "d", "310000"), Destination("32", "a", "320000"),
             Destination("33", "e", "330000")]
    table = RouteTable("a", dests, links)
    assert table.route("310115").next_hop == "b"
    assert table.route("320105").local
    # e lists a, but a does not list e: a one-sided link does not count
    with pytest.raises(Unavailable):
        table.route("330100")
    with pytest.raises(NotFound):
        table.route("440100")


def test_partner_beats_a_gateway_announcement_of_the_same_prefix() -> None:
    table = RouteTable("a", [Destination("31", "b", None), Destination("31", "a", "310000")],
                       {"a": ("b",), "b": ("a",)})
    assert table.route("310101").local


def test_gateway_announcement_without_partner_here_is_not_found() -> None:
    table = RouteTable("a", [Destination("44", "a", None)], {"a": ()})
    with pytest.raises(NotFound, match="no partner here"):
        table.route("440100")


ITEM = Item(code="gjj", name="公积金", mode="fully_online", required_materials=(),
            time_limit_days=3, cross_province=False)
NATIONAL = Item(code="yb", name="备案", mode="fully_online", required_materials=(),
                time_limit_days=1, cross_province=True)
METRO = Alliance(id="nj", name="南京都市圈", members=("3201", "3411"), items=frozenset({"gjj"}))


@pytest.mark.parametrize(("origin", "target", "item", "scope"), [
    ("320105", "320681", ITEM, Scope.INTRA_PROVINCE),
    ("341100", "320100", ITEM, Scope.METRO_CIRCLE),
    ("320105", "310000", NATIONAL, Scope.CROSS_PROVINCE),
    ("341100", "320100", NATIONAL, Scope.CROSS_PROVINCE),
])
def test_scopes(origin: str, target: str, item: Item, scope: Scope) -> None:
    assert admit(origin, target, item, [METRO]).scope is scope


def test_out_of_scope_is_refused_with_reason() -> None:
    with pytest.raises(PermissionDenied, match="share no alliance"):
        admit("320105", "310000", ITEM, [METRO])
    other = Alliance(id="x", name="x", members=("32", "31"), items=frozenset())
    with pytest.raises(PermissionDenied, match="alliance x does not list it"):
        admit("320105", "310000", ITEM, [other])


@pytest.mark.parametrize(("code", "current"), [
    ("320105", "320105"), ("320103", "320104"), ("310108", "310106"), ("310230", "310151"),
    ("320684", "320614"),
])
def test_retired_codes_resolve_to_successors(code: str, current: str) -> None:
    resolution = resolve(code)
    assert resolution is not None and resolution.current == current
    assert bool(resolution.note) == (code != current)


def test_unknown_code_is_none() -> None:
    assert resolve("999999") is None
    assert resolve("３２０１０５") is None  # full-width digits are not a code
    assert resolve("12345") is None
