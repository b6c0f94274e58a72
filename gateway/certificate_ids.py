"""Electronic-certificate (电子证照) identifiers after GB/T 36901–36906. No I/O.

Groundwork for issue #13. An identifier reads::

    1.2.156.3005.2.<type code>.<issuer code>.<serial>.<version>.<check>

- ``1.2.156.3005.2``: the fixed OID arc of electronic certificates; matched exactly.
- type code: 1 to 8 ASCII digits, as the defining authority numbers the certificate type
  (leading zeros are kept and significant: codes compare as strings).
- issuer code: the issuing authority's GB 32100 统一社会信用代码 (18 characters, its own
  MOD 31 check character valid); its characters 3–8 are the division that registered the
  issuer, which is where a lookup is routed (DESIGN §3).
- serial: the issuer's number for the certificate, 1 to 32 of ``0-9A-Z`` (upper case).
- version: exactly 3 digits (``001`` for a first issue).
- check: one character of ``0-9A-Z``, ISO/IEC 7064 MOD 37,36 (the hybrid system with
  M = 36, M + 1 = 37; GB/T 17710 is its Chinese adoption), computed by python-stdnum's
  ``stdnum.iso7064.mod_37_36``.

What the check character covers, chosen here because GB/T 36902's text was not at hand:
the four fields joined **without dots and without the OID prefix**, i.e.
``type code + issuer code + serial + version``. Why: the prefix is a constant matched
exactly, so covering it would detect nothing more (it only shifts the value); the fields
are what people copy and mistype, and a system holding them as separate metadata (type
code, issuer code, number) computes the check without knowing the OID. Dots are outside
the MOD 37,36 alphabet, so a moved dot cannot change the check; it cannot go unnoticed
either: the issuer code (18) and the version (3) have fixed widths, so a dot moved across
any boundary leaves a field of the wrong length. The choice is in one place
(:func:`check_character`) should GB/T 36902 say otherwise.

MOD 37,36 detects every single-character substitution of the checked string and every
adjacent transposition except, for each running state, one pair of characters whose
values are neighbours (``589``/``598`` as a type code share a check): 72 of the 45,360
(state, pair) cases. tests/test_certificate_ids.py checks both exhaustively or over
generated identifiers; docs/certificates.md gives the arithmetic and a worked example.

Parsing is strict: no case folding, no whitespace, no trailing newline
(``re.fullmatch``, never ``$``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from stdnum.iso7064 import mod_37_36

from gateway.errors import InvalidArgument, quote
from gateway.identifiers import CREDIT_CODE, check_credit_code, registering_division

PREFIX: Final = "1.2.156.3005.2"
FIELD: Final = "certificate_id"

TYPE_CODE: Final = re.compile(r"[0-9]{1,8}")
SERIAL: Final = re.compile(r"[0-9A-Z]{1,32}")
VERSION: Final = re.compile(r"[0-9]{3}")
CHECK: Final = re.compile(r"[0-9A-Z]")
# prefix, the five fields at their longest and the five dots between them: 81 characters
MAX_LENGTH: Final = len(PREFIX) + 8 + 18 + 32 + 3 + 1 + 5

_QUOTE_LIMIT = 96  # every valid identifier is shown whole in a message


def check_character(type_code: str, issuer_code: str, serial: str, version: str) -> str:
    """The MOD 37,36 check character over type code + issuer code + serial + version
    (no dots, no prefix: see the module docstring). The parts must be well formed."""
    return str(mod_37_36.calc_check_digit(type_code + issuer_code + serial + version))


@dataclass(frozen=True, slots=True)
class CertificateId:
    """A well-formed certificate identifier: every part checked, check character right.

    Build one with :meth:`make` (computes the check) or :func:`parse`; ``str()`` gives
    the canonical text, which :func:`parse` reads back to an equal value.
    """

    type_code: str
    issuer_code: str
    serial: str
    version: str
    check: str

    def __post_init__(self) -> None:
        _check(self.type_code, self.issuer_code, self.serial, self.version, self.check,
               field=FIELD, text=self._text())

    @classmethod
    def make(cls, type_code: str, issuer_code: str, serial: str,
             version: str = "001") -> CertificateId:
        """The identifier of these parts, its check character computed."""
        _check_fields(type_code, issuer_code, serial, version, field=FIELD,
                      text=".".join((PREFIX, type_code, issuer_code, serial, version)))
        return cls(type_code, issuer_code, serial, version,
                   check_character(type_code, issuer_code, serial, version))

    @property
    def issuer_division(self) -> str:
        """The division that registered the issuer: GB 32100 characters 3–8."""
        # GB 32100-2015 §4: chars 3–8 = 登记管理机关行政区划码
        return registering_division(False, self.issuer_code)

    def _text(self) -> str:
        return ".".join((PREFIX, self.type_code, self.issuer_code, self.serial,
                         self.version, self.check))

    def __str__(self) -> str:
        return self._text()


def format_id(type_code: str, issuer_code: str, serial: str, version: str = "001") -> str:
    """The identifier text of these parts with its check character."""
    return str(CertificateId.make(type_code, issuer_code, serial, version))


def parse(text: str, *, field: str = FIELD) -> CertificateId:
    """Read an identifier; InvalidArgument naming ``field`` and quoting the input if it
    is malformed in any way or its check character is wrong."""
    known = _PARSED.get(text) if isinstance(text, str) else None
    if known is not None:  # a pure function of the string: the same answer again
        return known
    shown = quote(text, _QUOTE_LIMIT)
    if len(text) > MAX_LENGTH:
        raise InvalidArgument(f"a certificate identifier has at most {MAX_LENGTH} "
                              f"characters: {shown}", field=field)
    if not text.startswith(PREFIX + "."):
        raise InvalidArgument(f"a certificate identifier starts with {PREFIX}.: {shown}",
                              field=field)
    rest = text[len(PREFIX) + 1:]
    parts = rest.split(".")
    if len(parts) != 5:
        raise InvalidArgument("a certificate identifier has five parts after the prefix "
                              "(type code, issuer code, serial, version, check), "
                              f"not {len(parts)}: {shown}", field=field)
    type_code, issuer_code, serial, version, check = parts
    _check(type_code, issuer_code, serial, version, check, field=field, text=text)
    parsed = CertificateId(type_code, issuer_code, serial, version, check)
    if len(_PARSED) >= _PARSED_SIZE:  # bounded: a flood of distinct ids costs no memory
        _PARSED.clear()
    _PARSED[text] = parsed
    return parsed


_PARSED_SIZE: Final = 8192
_PARSED: dict[str, CertificateId] = {}  # identifiers already read, valid ones only


def _check(type_code: str, issuer_code: str, serial: str, version: str, check: str,
           *, field: str, text: str) -> None:
    _check_fields(type_code, issuer_code, serial, version, field=field, text=text)
    shown = quote(text, _QUOTE_LIMIT)
    if not CHECK.fullmatch(check):
        raise InvalidArgument(f"the check is one of 0-9 and A-Z: {shown}", field=field)
    if check != check_character(type_code, issuer_code, serial, version):
        raise InvalidArgument(f"the check character is wrong: {shown}", field=field)


def _check_fields(type_code: str, issuer_code: str, serial: str, version: str,
                  *, field: str, text: str) -> None:
    shown = quote(text, _QUOTE_LIMIT)
    if not TYPE_CODE.fullmatch(type_code):
        raise InvalidArgument(f"the type code is 1 to 8 digits: {shown}", field=field)
    if not CREDIT_CODE.fullmatch(issuer_code):  # canonical form only: no separators, no case
        raise InvalidArgument("the issuer code is an 18-character unified social credit "
                              f"code: {shown}", field=field)
    try:
        check_credit_code(issuer_code, field=field)
    except InvalidArgument as exc:
        raise InvalidArgument(f"issuer code: {exc.message}: {shown}", field=field) from None
    if not SERIAL.fullmatch(serial):
        raise InvalidArgument(f"the serial is 1 to 32 of 0-9 and A-Z: {shown}", field=field)
    if not VERSION.fullmatch(version):
        raise InvalidArgument(f"the version is 3 digits: {shown}", field=field)
