"""Finding the issuer of a certificate (issue #13 item 2, docs/certificates.md). No I/O.

A holder's id names the division that registered them (GB 11643 digits 1–6, GB 32100
characters 3–8), which is where most of their certificates were issued. Not all: a
marriage registered in another province is held there. So, like the evidence broker of
the EU Once-Only Technical System, the gateway keeps a *directory*: which platform
issues which certificate types for which division prefixes. :meth:`Directory.issuer_for`
answers a lookup (one type, one division); :meth:`Directory.candidates` the fan-out of
``ListCertificates`` (the home region's issuers, then every other issuer of the types);
:func:`merge` joins the listings that come back, one entry per certificate identifier.

Everything here is deterministic: the same directory and the same question give the
same answer in the same order, whatever order the mapping or the answers came in, so
two gateways (or two runs) route and list alike.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Protocol, TypeVar

from gateway.certificate_ids import TYPE_CODE
from gateway.config import Config
from gateway.errors import ConfigError, InvalidArgument, NotFound, quote
from gateway.identifiers import check_credit_code, check_resident_id

from .documents import HolderIdType

DIVISION: Final = re.compile(r"[0-9]{6}")  # GB/T 2260 行政区划代码
PREFIX: Final = re.compile(r"[0-9]{1,6}")  # as partners.toml's `prefixes`


def home_division(id_type: HolderIdType | str, number: str, *, field: str = "holder") -> str:
    """The division that registered the holder: where their certificates are sought first.

    Passports and other documents name no division, so there is no home to route to;
    that is the caller's argument to fix (name the issuer's division), not a fault here.
    """
    try:
        kind = HolderIdType(id_type)
    except ValueError:
        raise InvalidArgument(f"unknown holder id type {quote(id_type)}: one of "
                              + ", ".join(t.value for t in HolderIdType),
                              field=f"{field}.id_type") from None
    if kind is HolderIdType.RESIDENT:
        return check_resident_id(number, field=f"{field}.number")[:6]
    if kind is HolderIdType.USCC:
        return check_credit_code(number, field=f"{field}.number")[2:8]
    raise InvalidArgument(f"a {kind.value} number names no home division (only resident "
                          "id and credit code numbers do): ask with the issuing division",
                          field=f"{field}.id_type")


def check_division(division: str, *, field: str = "division") -> str:
    """A GB/T 2260 division code: exactly six ASCII digits."""
    if not DIVISION.fullmatch(division):
        raise InvalidArgument(f"a division is six digits, not {quote(division)}", field=field)
    return division


def province(division: str) -> str:
    """The province's own code: the first two digits and ``0000`` (320105 → 320000)."""
    return division[:2] + "0000"


def _check_type(cert_type: str, field: str) -> str:
    if not TYPE_CODE.fullmatch(cert_type):
        raise InvalidArgument(f"a certificate type code is 1 to 8 digits, not {quote(cert_type)}",
                              field=field)
    return cert_type


@dataclass(frozen=True, slots=True)
class IssuerEntry:
    """What one platform announces: the division prefixes it serves, the types it issues.

    It issues every listed type for every listed prefix (a platform that issues different
    types in different places announces itself as it is: as the union).
    """

    prefixes: tuple[str, ...]
    types: frozenset[str]


@dataclass(frozen=True, slots=True)
class Found:
    """Where a certificate is sought, and why there.

    ``division_used`` is ``division_asked`` itself, or its province when no platform
    issues the type for the exact division (``fallback``). For an issuer outside the
    holder's home region (``home`` false, from :meth:`Directory.candidates`) it is the
    directory prefix that issuer serves. ``prefix`` is the directory prefix that matched;
    ``types`` the asked types this platform is asked for.
    """

    partner: str
    division_asked: str
    division_used: str
    fallback: bool
    prefix: str = ""
    types: tuple[str, ...] = ()
    home: bool = True

    def rank(self) -> tuple[bool, bool, int, str, str, tuple[str, ...]]:
        """The preference order (docs/certificates.md): home region first, the exact
        division before its province, a longer (more local) prefix first, then by id."""
        return (not self.home, self.fallback, -len(self.prefix), self.partner,
                self.division_used, self.types)


class Directory:
    """Which platform issues which certificate types where; built from plain data
    (later from partners.toml), checked once, then only read."""

    def __init__(self, entries: Mapping[str, IssuerEntry]) -> None:
        owner: dict[tuple[str, str], str] = {}
        for partner in sorted(entries):
            entry = entries[partner]
            if not entry.prefixes or not entry.types:
                raise ConfigError(f"issuer {partner!r}: at least one prefix and one type")
            for prefix in entry.prefixes:
                if not PREFIX.fullmatch(prefix):
                    raise ConfigError(f"issuer {partner!r}: prefix {prefix!r} is not 1 to 6 digits")
            for cert_type in entry.types:
                if not TYPE_CODE.fullmatch(cert_type):
                    raise ConfigError(f"issuer {partner!r}: type {cert_type!r} "
                                      "is not 1 to 8 digits")
            # one issuer per (prefix, type): a tie would have to be broken by something
            # arbitrary, and a lookup must reach the one platform that holds the register
            for prefix in entry.prefixes:
                for cert_type in entry.types:
                    other = owner.setdefault((prefix, cert_type), partner)
                    if other != partner:
                        raise ConfigError(f"issuers {other!r} and {partner!r} both issue type "
                                          f"{cert_type!r} for prefix {prefix!r}")
        self._owner = owner
        self._entries = MappingProxyType({p: entries[p] for p in sorted(entries)})

    @property
    def entries(self) -> Mapping[str, IssuerEntry]:
        """The announcements, read-only, by partner id."""
        return self._entries

    def _longest(self, cert_type: str, division: str) -> tuple[str, str] | None:
        """(partner, prefix) of the longest prefix of ``division`` issuing ``cert_type``."""
        for length in range(len(division), 0, -1):
            partner = self._owner.get((division[:length], cert_type))
            if partner is not None:
                return partner, division[:length]
        return None

    def issuer_for(self, cert_type: str, division: str) -> Found:
        """The platform that issues ``cert_type`` for ``division``: the longest matching
        prefix; failing any, the longest matching the province's code; else NOT_FOUND."""
        _check_type(cert_type, "cert_type")
        check_division(division)
        hit = self._longest(cert_type, division)
        if hit is not None:
            return Found(hit[0], division, division, False, hit[1], (cert_type,))
        used = province(division)
        hit = self._longest(cert_type, used) if used != division else None
        if hit is not None:
            return Found(hit[0], division, used, True, hit[1], (cert_type,))
        raise NotFound(f"no platform issues certificate type {quote(cert_type)} for division "
                       f"{division} or its province {used}", field="cert_type")

    def candidates(self, holder_division: str, cert_types: Iterable[str]) -> list[Found]:
        """Where ``ListCertificates`` asks: one :class:`Found` per platform, home first.

        Home: the :meth:`issuer_for` answer for each type (types nobody issues there are
        skipped). Elsewhere: every other platform issuing any of the types, by id. Empty
        when nobody issues any of them.
        """
        check_division(holder_division, field="holder_division")
        asked = sorted({_check_type(t, "cert_types") for t in cert_types})
        if not asked:
            raise InvalidArgument("name at least one certificate type", field="cert_types")
        home: dict[str, Found] = {}
        for cert_type in asked:
            try:
                found = self.issuer_for(cert_type, holder_division)
            except NotFound:
                continue
            seen = home.get(found.partner)
            if seen is None:
                home[found.partner] = found
            else:  # one platform for several types: one request, the most local match
                best = min(seen, found, key=Found.rank)
                home[found.partner] = Found(
                    best.partner, best.division_asked, best.division_used, best.fallback,
                    best.prefix, tuple(sorted(set(seen.types) | set(found.types))))
        out = sorted(home.values(), key=Found.rank)
        for partner, entry in self._entries.items():
            types = tuple(sorted(entry.types.intersection(asked)))
            if partner in home or not types:
                continue
            prefix = min(entry.prefixes)
            out.append(Found(partner, holder_division, prefix, False, prefix, types, home=False))
        return out


class Listed(Protocol):
    """A listed certificate: its identifier (GB/T 36901) is ``number``, as in
    :class:`~gateway.certificates.documents.Metadata`."""

    @property
    def number(self) -> str: ...


L = TypeVar("L", bound=Listed)


def merge(results: Iterable[tuple[Found, Sequence[L]]]) -> list[tuple[Found, L]]:
    """One entry per certificate identifier from the regions' listings, with where it
    was found; the first by :meth:`Found.rank` wins (home region first).

    The answer's order is the sources' rank, then the identifier, whatever order the
    answers came in. Different versions of a certificate have different identifiers and
    are all kept.
    """
    kept: dict[str, tuple[Found, L]] = {}
    for found, listing in sorted(results, key=lambda r: r[0].rank()):
        for item in sorted(listing, key=lambda i: i.number):
            kept.setdefault(item.number, (found, item))
    return sorted(kept.values(), key=lambda fi: (fi[0].rank(), fi[1].number))


def directory_of(config: Config) -> Directory:
    """The directory partners.toml announces: each partner's prefixes and `issues`."""
    return Directory({p.id: IssuerEntry(p.prefixes, frozenset(p.issues))
                      for p in config.partners.values() if p.issues})
