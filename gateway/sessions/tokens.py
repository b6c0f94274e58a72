"""The two tokens of a 屏对屏 session: a clerk's join token and a citizen's delegation. No I/O.

docs/sessions.md §2–3. Both are compact JWS by a platform's key (partners.toml), opened
with the certificate tokens' machinery (gateway/certificates/tokens.py): the same header,
key and signature checks, exactly the listed members, a short life and 60 s of skew.
Each kind has its own ``typ``, distinct from every other token's, so a join token never
passes for a delegation, a call token or a certificate document, nor the other way.

The member rules are data (``JOIN_RULES``, ``DELEGATION_RULES``), used both when a token
is made (InvalidArgument naming the argument) and when one is opened (Unauthenticated
naming the member), so what a gateway signs is exactly what it accepts.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from gateway.certificates.documents import canonical
from gateway.certificates.tokens import check_members, check_window, open_token
from gateway.config_loader import PARTY_ID
from gateway.errors import InvalidArgument, Unauthenticated
from gateway.identifiers import check_credit_code, check_resident_id, mask_id
from gateway.ids import CASE_ID
from gateway.signing import SigningKey, compact
from gateway.verifier import KeyLookup

JOIN_TYP: Final = "tongban-join+jwt"
DELEGATION_TYP: Final = "tongban-delegation+jwt"
JOIN_MAX_TTL_S: Final = 43200  # 12 h: a clerk's working day (§2)
DELEGATION_MAX_TTL_S: Final = 7200  # §3
NAME_CHARS: Final = 32
WORD: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")  # clerk ids, window ids, cids (§2, §4)


class Side(StrEnum):
    """The two sides of a session (§1): where the citizen stands, and the handling region."""

    ORIGIN = "origin"
    REMOTE = "remote"


_SIDES: Final = frozenset(s.value for s in Side)
Rule = tuple[Callable[[object], bool], str]  # a member's test, and what it must be


def _word(value: object) -> bool:
    return isinstance(value, str) and WORD.fullmatch(value) is not None


def _ulid(value: object) -> bool:
    return isinstance(value, str) and CASE_ID.fullmatch(value) is not None


def _case(value: object) -> bool:
    return value == "" or _ulid(value)


def _party(value: object) -> bool:
    return isinstance(value, str) and PARTY_ID.fullmatch(value) is not None


def _name(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= NAME_CHARS and value.isprintable()


def _citizen(value: object) -> bool:
    """A resident id number (GB 11643) or a credit code (GB 32100), written compact."""
    if not isinstance(value, str):
        return False
    for check in (check_resident_id, check_credit_code):
        try:
            if check(value, field="sub") == value:
                return True
        except InvalidArgument:
            continue
    return False


JOIN_RULES: Final[Mapping[str, Rule]] = {
    "sub": (_word, "1 to 64 of A-Za-z0-9._-"),
    "name": (_name, f"1 to {NAME_CHARS} printable characters"),
    "win": (_word, "1 to 64 of A-Za-z0-9._-"),
    "ses": (_ulid, "a ULID"),
    "cas": (_case, "a ULID or empty"),
    "sid": (lambda v: isinstance(v, str) and v in _SIDES, "origin or remote"),
    "oth": (_party, "a partner id"),
}
DELEGATION_RULES: Final[Mapping[str, Rule]] = {
    "aud": (_party, "a partner id"),
    "ses": (_ulid, "a ULID"),
    "cas": (_case, "a ULID or empty"),
    "sub": (_citizen, "a resident id number or a credit code"),  # never shown: PII
}
_TIMES: Final = frozenset({"iss", "iat", "exp"})


def _bad_member(claims: Mapping[str, object], rules: Mapping[str, Rule]) -> str | None:
    """The first member (in rule order) that breaks its rule, or None."""
    return next((m for m, (ok, _) in rules.items() if not ok(claims[m])), None)


def _sign(key: SigningKey, typ: str, claims: dict[str, Any], rules: Mapping[str, Rule],
          names: Mapping[str, str], now: float, ttl: int, max_ttl: int) -> str:
    if not 0 < ttl <= max_ttl:
        raise InvalidArgument(f"1..{max_ttl} s", field="ttl")
    bad = _bad_member(claims, rules)
    if bad is not None:
        raise InvalidArgument(rules[bad][1], field=names[bad])
    iat = int(now)
    payload = {"iss": key.kid.split("#", 1)[0], "iat": iat, "exp": iat + ttl} | claims
    return compact(key, typ, canonical(payload))


def _open(token: str, keys_for: KeyLookup, typ: str, rules: Mapping[str, Rule],
          max_ttl: int, now: float, what: str) -> tuple[dict[str, Any], str, int]:
    claims, key = open_token(token, keys_for, typ, what)
    check_members(claims, _TIMES | rules.keys(), frozenset(), what)
    exp = check_window(claims["iat"], claims["exp"], now, max_ttl, what)
    bad = _bad_member(claims, rules)
    if bad is not None:
        raise Unauthenticated(f"the {what}'s {bad} must be {rules[bad][1]}")
    return claims, key.kid, exp


@dataclass(frozen=True, slots=True, kw_only=True)
class Join:
    """The verified claims of a join token (§2)."""

    iss: str  # the clerk's platform
    clerk: str  # sub
    name: str  # the clerk's display name
    window: str  # win
    session: str  # ses
    case: str  # cas ("" before a case exists)
    side: Side  # sid
    other: str  # oth: the other side's platform
    iat: int
    exp: int
    kid: str


_JOIN_ARGS: Final = {"sub": "clerk", "name": "name", "win": "window", "ses": "session",
                     "cas": "case", "sid": "side", "oth": "other"}


def sign_join(key: SigningKey, *, clerk: str, name: str, window: str, session: str, case: str,
              side: Side | str, other: str, now: float, ttl: int = 28800) -> str:
    """A clerk's join token by its platform's key (``iss`` is the key's owner), valid
    ``ttl`` seconds from ``now``; InvalidArgument naming a bad argument."""
    claims = {"sub": clerk, "name": name, "win": window, "ses": session, "cas": case,
              "sid": str(side), "oth": other}
    return _sign(key, JOIN_TYP, claims, JOIN_RULES, _JOIN_ARGS, now, ttl, JOIN_MAX_TTL_S)


def verify_join(token: str, keys_for: KeyLookup, *, now: float) -> Join:
    """The claims of a genuine, current join token; Unauthenticated for anything forged,
    malformed or expired. Whether ``iss`` is attached here and the sides agree with the
    session is the caller's (it knows the gateway and the session)."""
    c, kid, exp = _open(token, keys_for, JOIN_TYP, JOIN_RULES, JOIN_MAX_TTL_S, now,
                        "join token")
    return Join(iss=c["iss"], clerk=c["sub"], name=c["name"], window=c["win"],
                session=c["ses"], case=c["cas"], side=Side(c["sid"]), other=c["oth"],
                iat=c["iat"], exp=exp, kid=kid)


@dataclass(frozen=True, slots=True, kw_only=True)
class Delegation:
    """The verified claims of a citizen's delegation (异地帮办授权, §3)."""

    iss: str  # the origin platform
    remote: str  # aud: the remote platform the citizen lets edit
    session: str  # ses
    case: str  # cas
    citizen: str = field(repr=False)  # sub: an id number, PII (see ``masked``)
    iat: int
    exp: int
    kid: str

    @property
    def masked(self) -> str:
        return mask_id(self.citizen)


_DELEGATION_ARGS: Final = {"aud": "remote", "ses": "session", "cas": "case", "sub": "citizen"}


def sign_delegation(key: SigningKey, *, remote: str, session: str, case: str, citizen: str,
                    now: float, ttl: int = 3600) -> str:
    """The origin platform's token: the citizen lets ``remote``'s clerks edit the form of
    this session for ``ttl`` seconds from ``now``."""
    claims = {"aud": remote, "ses": session, "cas": case, "sub": citizen}
    return _sign(key, DELEGATION_TYP, claims, DELEGATION_RULES, _DELEGATION_ARGS, now, ttl,
                 DELEGATION_MAX_TTL_S)


def verify_delegation(token: str, keys_for: KeyLookup, *, now: float) -> Delegation:
    """The claims of a genuine, current delegation; Unauthenticated otherwise (never
    naming the citizen). Whether it is for this session's platforms is the caller's."""
    c, kid, exp = _open(token, keys_for, DELEGATION_TYP, DELEGATION_RULES,
                        DELEGATION_MAX_TTL_S, now, "delegation")
    return Delegation(iss=c["iss"], remote=c["aud"], session=c["ses"], case=c["cas"],
                      citizen=c["sub"], iat=c["iat"], exp=exp, kid=kid)
