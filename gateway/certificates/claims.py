"""Yes/no claims about a certificate: data minimisation (issue #13 §6). No I/O.

A consumer that needs one fact (valid on a day? is the holder called X? capital at least
Y? holder at least 18?) should not receive the whole document, which carries the
holder's id number, the issuer's file and every other field. It asks a *claim*; the
issuer answers with a short signed *claim answer*, a compact JWS (``typ``
``tongban-claim+jwt``, its own, so it passes for no other token kind) whose payload is
the certificate's number, the claim as asked, the boolean and nothing else, valid for
at most 300 s and addressed to the one consumer (``aud``).

Numeric facts (registered capital, …) are not document metadata (GB/T 36903 has no
place for them), so :func:`answer` takes them as ``facts``, a ``Mapping[str, int]``
the issuer keeps beside the metadata; they never leave it either. docs/certificates.md,
"Yes/no claims", has the format and a worked example.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Final

from gateway.certificate_ids import parse
from gateway.errors import (
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
    quote,
)
from gateway.signing import SigningKey, compact
from gateway.verifier import KeyLookup

from .documents import HolderIdType, Metadata, Status, canonical, parse_date
from .tokens import check_members, check_window, is_int, open_token

TYP: Final = "tongban-claim+jwt"
MAX_TTL_S: Final = 300  # an answer is about now: a revocation must show within minutes
MAX_TEXT: Final = 128  # as a document's holder
MAX_YEARS: Final = 150
MAX_SAFE: Final = 2**53 - 1  # integers exact in every JSON reader (RFC 7493 §2.2)
FACT_NAME: Final = re.compile(r"[a-z][a-z0-9_]{0,31}")
WHAT: Final = "claim answer"


@dataclass(frozen=True, slots=True)
class ValidOn:
    """The certificate's status is ``valid`` and ``on`` lies within its validity."""

    on: date


@dataclass(frozen=True, slots=True)
class NameIs:
    """The holder's name equals ``text`` after :func:`normalise_name`."""

    text: str  # normalised


@dataclass(frozen=True, slots=True)
class AtLeast:
    """The issuer's numeric fact ``field`` (e.g. ``registered_capital``) is ≥ ``value``."""

    field: str
    value: int


@dataclass(frozen=True, slots=True)
class AgeAtLeast:
    """The holder (a resident id, GB 11643) is at least ``years`` old on ``on``."""

    years: int
    on: date


Claim = ValidOn | NameIs | AtLeast | AgeAtLeast
PARAMS: Final[Mapping[str, frozenset[str]]] = {
    "valid_on": frozenset({"on"}), "name_is": frozenset({"text"}),
    "at_least": frozenset({"field", "value"}), "age_at_least": frozenset({"years", "on"})}


def normalise_name(text: str) -> str:
    """Unicode NFKC (full-width ``Ｚｈａｎｇ`` is ``Zhang``, compatibility ideographs their
    unified forms), then runs of whitespace as one space, none at the ends. Case is
    kept: a name is compared as written."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def _date(value: object, field: str) -> date:
    """A date object as it is, or a date as documents carry them."""
    return value if type(value) is date else parse_date(value, field)


def _int(value: object, low: int, high: int, field: str) -> int:
    if not is_int(value) or not low <= value <= high:
        raise InvalidArgument(f"an integer {low}..{high}", field=field)
    return value


def ask(name: object, params: Mapping[str, object], *, field: str = "claim"
        ) -> Claim:
    """The claim ``name`` with ``params`` (JSON values; a date as ``YYYY-MM-DD`` or a
    ``date``), checked: InvalidArgument naming ``claim.name`` or ``claim.<param>``."""
    if not isinstance(name, str) or name not in PARAMS:
        raise InvalidArgument(f"unknown claim {quote(name, 16)}; one of "
                     f"{', '.join(sorted(PARAMS))}", field=f"{field}.name")
    if not isinstance(params, Mapping):
        raise InvalidArgument("an object of parameters", field=f"{field}.params")
    missing = PARAMS[name] - params.keys()
    if missing:
        raise InvalidArgument(f"{name} needs {', '.join(sorted(PARAMS[name]))}",
                     field=f"{field}.{min(missing)}")
    extra = params.keys() - PARAMS[name]
    if extra:
        raise InvalidArgument(f"{name} takes no {quote(', '.join(sorted(map(str, extra))), 32)}",
                     field=f"{field}.params")
    if name == "valid_on":
        return ValidOn(_date(params["on"], f"{field}.on"))
    if name == "name_is":
        text = params["text"]
        norm = normalise_name(text) if isinstance(text, str) else ""
        if not 0 < len(norm) <= MAX_TEXT or not norm.isprintable():
            raise InvalidArgument(f"a name of 1 to {MAX_TEXT} printable characters",
                         field=f"{field}.text")
        return NameIs(norm)
    if name == "at_least":
        fact = params["field"]
        if not isinstance(fact, str) or not FACT_NAME.fullmatch(fact):
            raise InvalidArgument("a fact name: a-z, then up to 31 of a-z, 0-9 and _",
                         field=f"{field}.field")
        return AtLeast(fact, _int(params["value"], -MAX_SAFE, MAX_SAFE, f"{field}.value"))
    return AgeAtLeast(_int(params["years"], 0, MAX_YEARS, f"{field}.years"),
                      _date(params["on"], f"{field}.on"))


def to_json(claim: Claim) -> dict[str, Any]:
    """The claim as the answer carries it: ``{"name": …, <params>}``."""
    match claim:
        case ValidOn(on):
            return {"name": "valid_on", "on": on.isoformat()}
        case NameIs(text):
            return {"name": "name_is", "text": text}
        case AtLeast(fact, value):
            return {"name": "at_least", "field": fact, "value": value}
        case AgeAtLeast(years, on):
            return {"name": "age_at_least", "years": years, "on": on.isoformat()}


def birth_date(holder_id: str) -> date:
    """GB 11643: digits 7–14 of a resident id are the birth date ``YYYYMMDD``."""
    return date(int(holder_id[6:10]), int(holder_id[10:12]), int(holder_id[12:14]))


def age_reached(birth: date, years: int, on: date) -> bool:
    """Whether someone born on ``birth`` is ``years`` old on ``on``: from the
    ``years``-th birthday on; born on 29 February, from 1 March in a common year."""
    year = birth.year + years
    if year > date.max.year:
        return False
    try:
        anniversary = birth.replace(year=year)
    except ValueError:  # 29 February in a common year
        anniversary = date(year, 3, 1)
    return on >= anniversary


def evaluate(metadata: Metadata, claim: Claim, facts: Mapping[str, int] | None = None
             ) -> bool:
    """The truth of ``claim`` about the certificate, as its issuer knows it now.
    FailedPrecondition where the claim does not apply (no such fact, the holder is not
    a resident)."""
    match claim:
        case ValidOn(on):
            return metadata.status is Status.VALID and metadata.valid_from <= on \
                and (metadata.valid_to is None or on <= metadata.valid_to)
        case NameIs(text):
            return normalise_name(metadata.holder) == text
        case AtLeast(fact, value):
            if facts is None or fact not in facts:
                raise FailedPrecondition(f"certificate {metadata.number} has no fact "
                                         f"{quote(fact, 32)}", field="claim.field")
            return facts[fact] >= value
        case AgeAtLeast(years, on):
            if metadata.holder_id_type is not HolderIdType.RESIDENT:
                raise FailedPrecondition("an age is known only of a resident id holder",
                                         field="claim.name")
            return age_reached(birth_date(metadata.holder_id), years, on)


def answer(metadata: Metadata, claim: Claim, key: SigningKey, *, consumer: str, now: float,
           facts: Mapping[str, int] | None = None, ttl: int = MAX_TTL_S) -> str:
    """The issuer's signed answer to ``claim`` for ``consumer``: payload exactly
    ``{"iss", "aud", "iat", "exp", "number", "claim", "answer"}``; nothing else of the
    metadata or ``facts`` goes out."""
    if not 0 < ttl <= MAX_TTL_S:
        raise InvalidArgument(f"1..{MAX_TTL_S} s", field="ttl")
    if not isinstance(consumer, str) or not consumer or not consumer.isprintable() \
            or len(consumer) > 64:
        raise InvalidArgument("a party id", field="consumer")
    result = evaluate(metadata, claim, facts)
    iat = int(now)
    payload = {"iss": key.kid.split("#", 1)[0], "aud": consumer, "iat": iat,
               "exp": iat + ttl, "number": metadata.number, "claim": to_json(claim),
               "answer": result}
    return compact(key, TYP, canonical(payload))


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    """A verified claim answer. ``iss`` is the issuing platform: the caller checks it is
    the one that issues ``number``."""

    iss: str
    aud: str
    number: str
    claim: Claim
    answer: bool
    iat: int
    exp: int
    kid: str


_MEMBERS: Final = frozenset({"iss", "aud", "iat", "exp", "number", "claim", "answer"})


def verify_answer(token: str, keys_for: KeyLookup, *, consumer: str, now: float) -> Answer:
    """A genuine, current claim answer for ``consumer``. Unauthenticated for anything
    forged, malformed or expired; PermissionDenied (``answer.aud``) when it is
    addressed to another consumer."""
    claims, key = open_token(token, keys_for, TYP, WHAT)
    check_members(claims, _MEMBERS, frozenset(), WHAT)
    exp = check_window(claims["iat"], claims["exp"], now, MAX_TTL_S, WHAT)
    aud, number, result, asked = (claims["aud"], claims["number"], claims["answer"],
                                  claims["claim"])
    if not isinstance(aud, str) or not aud:
        raise Unauthenticated("the claim answer's aud is the consumer's id (a string)")
    if not isinstance(result, bool):
        raise Unauthenticated("the claim answer's answer is true or false")
    try:
        if not isinstance(number, str):
            raise InvalidArgument("a string", field="number")
        number = str(parse(number, field="number"))
        if not isinstance(asked, dict):
            raise InvalidArgument("an object", field="claim")
        params = {k: v for k, v in asked.items() if k != "name"}
        claim = ask(asked.get("name"), params)
    except InvalidArgument as exc:
        raise Unauthenticated(f"the claim answer's {exc.field} is bad: {exc.message}"
                              ) from None
    if to_json(claim) != asked:  # a name sent unnormalised, a date as a number...
        raise Unauthenticated("the claim answer's claim is not in its normal form")
    if aud != consumer:
        raise PermissionDenied(f"the claim answer is for {quote(aud, 24)}, not "
                               f"{quote(consumer, 24)}", field="answer.aud")
    return Answer(iss=key.owner, aud=aud, number=number, claim=claim, answer=result,
                  iat=claims["iat"], exp=exp, kid=key.kid)
