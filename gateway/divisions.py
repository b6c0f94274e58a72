"""GB/T 2260 division codes: names, validity years and successors of retired codes. No I/O
beyond reading the shipped tables once.

Names and years come from python-stdnum's ``cn/loc`` table (maintained from the 民政部
code lists); ``data/division_successors.csv`` maps a retired code to the code that took
over its area, so an old code in a request still routes and the caller is told.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from stdnum import numdb

CODE = re.compile(r"^[0-9]{6}$")
_YEARS = re.compile(r"^\[(\d*)-(\d*)\](.*)$")


@dataclass(frozen=True, slots=True)
class Division:
    """One code of the table, current (until is None) or retired."""

    code: str
    name: str
    province: str
    since: int | None
    until: int | None

    @property
    def current(self) -> bool:
        return self.until is None


@dataclass(frozen=True, slots=True)
class Resolution:
    """A requested code resolved to the current code that routes; note says why they differ."""

    requested: str
    current: str
    name: str
    note: str = ""


@cache
def _successors() -> dict[str, tuple[str, int, str]]:
    text = resources.files("gateway.data").joinpath("division_successors.csv").read_text("utf-8")
    rows = csv.reader(line for line in text.splitlines() if line and not line.startswith("#"))
    return {old: (new, int(year), why) for old, new, year, why in rows}


def _entries(code: str) -> list[Division]:
    info = numdb.get("cn/loc").info(code)
    props = {k: v for _, p in info for k, v in p.items()}
    county = props.get("county")
    if not county:
        return []
    out = []
    for variant in county.split(","):
        match = _YEARS.match(variant)
        since, until, name = (match.groups() if match else ("", "", variant))
        out.append(Division(code=code, name=name, province=props.get("province", ""),
                            since=int(since) if since else None,
                            until=int(until) if until else None))
    return out


@cache
def lookup(code: str) -> Division | None:
    """The division for a 6-digit code: the current one if the code is in use, else the
    last one that used it."""
    if not CODE.fullmatch(code):
        return None
    entries = _entries(code)
    if not entries:
        return None
    current = [d for d in entries if d.current]
    return current[0] if current else max(entries, key=lambda d: d.until or 0)


def resolve(code: str) -> Resolution | None:
    """Resolve a requested code to a current one, following successor links of retired codes.

    None when the code is not a GB/T 2260 code at all. A retired code without a known
    successor resolves to itself, with a note, and routes by its prefix.
    """
    division = lookup(code)
    if division is None:
        return None
    if division.current:
        return Resolution(requested=code, current=code, name=division.name)
    seen = {code}
    current, notes = code, []
    while current in _successors():
        new, year, why = _successors()[current]
        old = lookup(current)
        notes.append(f"{current} ({old.name if old else '?'}) → {new} in {year}: {why}")
        if new in seen:
            break
        seen.add(new)
        current = new
    target = lookup(current)
    if current == code or target is None:
        return Resolution(requested=code, current=code, name=division.name,
                          note=f"{code} ({division.name}) was retired in {division.until}; "
                               "no successor is known, routed by its prefix")
    return Resolution(requested=code, current=current, name=target.name, note="; ".join(notes))


def province_of(code: str) -> str:
    """GB/T 2260: the first two digits name the province-level division."""
    return code[:2]
