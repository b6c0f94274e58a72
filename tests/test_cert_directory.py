"""Finding the issuer: home division, the directory, the ListCertificates fan-out and
merge (docs/certificates.md "Finding the issuer")."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stdnum.cn import ric

from gateway.certificates.directory import (
    Directory,
    Found,
    IssuerEntry,
    check_division,
    home_division,
    merge,
    province,
)
from gateway.errors import ConfigError, InvalidArgument, NotFound

DIVISIONS = st.from_regex(r"[0-9]{6}", fullmatch=True)
TYPES = st.sampled_from(["11", "12", "205", "3"])
PREFIXES = st.from_regex(r"[0-9]{1,6}", fullmatch=True)


@dataclass(frozen=True)
class Cert:
    number: str
    source: str = ""


# --- home division -----------------------------------------------------------------

@settings(max_examples=50, deadline=None)
@given(division=DIVISIONS, day=st.dates(date(1900, 1, 1), date(2099, 12, 31)), seq=st.from_regex(r"[0-9]{3}", fullmatch=True))
def test_resident_home_is_digits_1_to_6(division: str, day: date, seq: str) -> None:
    body = f"{division}{day:%Y%m%d}{seq}"
    assert home_division("resident", body + ric.calc_check_digit(body + "0"))  # it skips the last == division


def test_home_division() -> None:
    assert home_division("resident", "11010519491231002X") == "110105"
    assert home_division("uscc", "91320105MA1MXXXX0H") == "320105"


@pytest.mark.parametrize(("id_type", "number", "field", "words"), [
    ("resident", "110105194912310021", "holder.number", "check digit"),
    ("resident", "1101051949", "holder.number", "18 characters"),
    ("uscc", "91320105MA1MXXXX0X", "holder.number", "check character"),
    ("passport", "E12345678", "holder.id_type", "names no home division"),
    ("other", "X1", "holder.id_type", "names no home division"),
    ("driver", "X1", "holder.id_type", "unknown holder id type 'driver'"),
])
def test_home_division_refusals(id_type: str, number: str, field: str, words: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        home_division(id_type, number)
    assert info.value.field == field and words in str(info.value)


# --- the directory -------------------------------------------------------------------

def test_worked_example() -> None:
    d = Directory({
        "320105": IssuerEntry(("320105",), frozenset({"11"})),
        "js": IssuerEntry(("320000",), frozenset({"11", "12"})),
        "sh": IssuerEntry(("31",), frozenset({"12"})),
    })
    assert d.issuer_for("11", "320105") == Found("320105", "320105", "320105", False,
                                                 "320105", ("11",))
    assert d.issuer_for("12", "320105") == Found("js", "320105", "320000", True,
                                                 "320000", ("12",))
    assert d.issuer_for("11", "320000").fallback is False
    with pytest.raises(NotFound) as info:
        d.issuer_for("11", "310115")
    assert str(info.value) == ("no platform issues certificate type '11' for division "
                               "310115 or its province 310000")
    assert info.value.field == "cert_type"
    assert d.candidates("320105", ["12", "11"]) == [
        Found("320105", "320105", "320105", False, "320105", ("11",)),
        Found("js", "320105", "320000", True, "320000", ("12",)),
        Found("sh", "320105", "31", False, "31", ("12",), home=False),
    ]
    assert d.candidates("310115", ["11"]) == [
        Found("320105", "310115", "320105", False, "320105", ("11",), home=False),
        Found("js", "310115", "320000", False, "320000", ("11",), home=False),
    ]


@pytest.mark.parametrize(("call", "field"), [
    (lambda d: d.issuer_for("1a", "320105"), "cert_type"),
    (lambda d: d.issuer_for("11", "32010"), "division"),
    (lambda d: d.issuer_for("11", "３２０１０５"), "division"),
    (lambda d: d.candidates("32010x", ["11"]), "holder_division"),
    (lambda d: d.candidates("320105", []), "cert_types"),
    (lambda d: d.candidates("320105", ["123456789"]), "cert_types"),
])
def test_bad_arguments(call: object, field: str) -> None:
    d = Directory({"a": IssuerEntry(("32",), frozenset({"11"}))})
    with pytest.raises(InvalidArgument) as info:
        call(d)  # type: ignore[operator]
    assert info.value.field == field


@pytest.mark.parametrize(("entries", "words"), [
    ({"a": IssuerEntry((), frozenset({"11"}))}, "at least one prefix"),
    ({"a": IssuerEntry(("32",), frozenset())}, "at least one prefix"),
    ({"a": IssuerEntry(("3201051",), frozenset({"11"}))}, "not 1 to 6 digits"),
    ({"a": IssuerEntry(("32",), frozenset({"x"}))}, "not 1 to 8 digits"),
    ({"b": IssuerEntry(("32",), frozenset({"11", "12"})),
      "a": IssuerEntry(("31", "32"), frozenset({"12"}))},
     "issuers 'a' and 'b' both issue type '12' for prefix '32'"),
])
def test_bad_directory(entries: dict[str, IssuerEntry], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        Directory(entries)


@settings(max_examples=100, deadline=None)
@given(division=DIVISIONS, lengths=st.sets(st.integers(1, 6), min_size=1), t=TYPES)
def test_longest_prefix_beats_shorter(division: str, lengths: set[int], t: str) -> None:
    d = Directory({f"p{n}": IssuerEntry((division[:n],), frozenset({t})) for n in lengths})
    found = d.issuer_for(t, division)
    assert (found.partner, found.prefix, found.fallback) == (
        f"p{max(lengths)}", division[:max(lengths)], False)


ENTRIES = st.dictionaries(
    st.from_regex(r"[a-z]{1,3}", fullmatch=True),
    st.builds(IssuerEntry, st.lists(PREFIXES, min_size=1, max_size=4).map(tuple),
              st.frozensets(TYPES, min_size=1)),
    max_size=8)


def directory(entries: dict[str, IssuerEntry]) -> Directory:
    """entries made unambiguous: a (prefix, type) already taken is dropped."""
    taken: set[tuple[str, str]] = set()
    clean: dict[str, IssuerEntry] = {}
    for partner, e in entries.items():
        types = frozenset(t for t in e.types if all((p, t) not in taken for p in e.prefixes))
        if types:
            taken |= {(p, t) for p in e.prefixes for t in types}
            clean[partner] = IssuerEntry(e.prefixes, types)
    return Directory(clean)


def model(entries: dict[str, IssuerEntry], t: str, division: str) -> tuple[str, str] | None:
    """The longest prefix of division issuing t, by brute force."""
    hits = [(len(p), p, name) for name, e in entries.items() if t in e.types
            for p in e.prefixes if division.startswith(p)]
    return (max(hits)[2], max(hits)[1]) if hits else None


@settings(max_examples=200, deadline=None)
@given(data=ENTRIES, division=DIVISIONS, t=TYPES)
def test_fallback_only_when_exact_division_has_none(
        data: dict[str, IssuerEntry], division: str, t: str) -> None:
    d = directory(data)
    entries = d.entries
    exact, prov = model(entries, t, division), model(entries, t, province(division))
    if exact is None and prov is None:
        with pytest.raises(NotFound):
            d.issuer_for(t, division)
        return
    found = d.issuer_for(t, division)
    assert found.division_asked == division
    assert found.fallback is (exact is None)
    assert found.division_used == (province(division) if exact is None else division)
    assert (found.partner, found.prefix) == (exact or prov)


@settings(max_examples=100, deadline=None)
@given(data=ENTRIES, division=DIVISIONS, types=st.lists(TYPES, min_size=1), seed=st.integers())
def test_candidates_deterministic_and_deduplicated(
        data: dict[str, IssuerEntry], division: str, types: list[str], seed: int) -> None:
    d = directory(data)
    items = list(d.entries.items())
    random.Random(seed).shuffle(items)
    shuffled = list(types)
    random.Random(seed).shuffle(shuffled)
    got = d.candidates(division, types)
    assert Directory(dict(items)).candidates(division, shuffled) == got
    partners = [f.partner for f in got]
    assert len(partners) == len(set(partners))
    homes = [f.home for f in got]
    assert homes == sorted(homes, reverse=True)  # home first
    issuing = {p for p, e in d.entries.items() if e.types & set(types)}
    assert set(partners) == issuing  # everyone who issues any of them is asked
    for f in got:
        assert f.types and set(f.types) <= set(types) & d.entries[f.partner].types
        if f.home:
            for t in f.types:
                assert d.issuer_for(t, division).partner == f.partner


FOUNDS = st.builds(Found, st.sampled_from(["a", "b", "c", "d"]), st.just("320105"),
                   st.sampled_from(["320105", "320000"]), st.booleans(),
                   PREFIXES, st.just(("11",)), st.booleans())


@settings(max_examples=200, deadline=None)
@given(results=st.lists(st.tuples(FOUNDS, st.lists(st.sampled_from("ABCDEF"), max_size=4)),
                        max_size=6, unique_by=lambda r: r[0].partner),
       seed=st.integers())
def test_merge_keeps_one_per_identifier_preferring_home(
        results: list[tuple[Found, list[str]]], seed: int) -> None:
    listings = [(f, [Cert(n, f.partner) for n in ns]) for f, ns in results]
    merged = merge(listings)
    shuffled = list(listings)
    random.Random(seed).shuffle(shuffled)
    assert merge(shuffled) == merged
    numbers = [c.number for _, c in merged]
    assert len(numbers) == len(set(numbers))
    assert set(numbers) == {n for _, ns in results for n in ns}
    for found, cert in merged:
        best = min((f for f, ns in results if cert.number in ns), key=Found.rank)
        assert found == best and cert.source == found.partner
    ranks = [f.rank() for f, _ in merged]
    assert ranks == sorted(ranks)


def test_merge_home_first() -> None:
    home = Found("320105", "320105", "320105", False, "320105", ("11",))
    far = Found("sh", "320105", "31", False, "31", ("11",), home=False)
    merged = merge([(far, [Cert("X", "sh"), Cert("Y", "sh")]), (home, [Cert("X", "320105")])])
    assert merged == [(home, Cert("X", "320105")), (far, Cert("Y", "sh"))]


def test_check_division() -> None:
    assert check_division("320105") == "320105"
    with pytest.raises(InvalidArgument, match="six digits"):
        check_division("3201050")
