"""Certificate identifiers (GB/T 36901–36906, ISO 7064 MOD 37,36): hypothesis and the
worked example of docs/certificates.md."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from stdnum.iso7064 import mod_37_36

from gateway.certificate_ids import (
    MAX_LENGTH,
    PREFIX,
    CertificateId,
    check_character,
    format_id,
    parse,
)
from gateway.errors import InvalidArgument
from gateway.identifiers import check_credit_code
from tests.federation import ROOT
from tests.test_identifiers import credit_codes

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
EXAMPLE = "1.2.156.3005.2.11.91320105MA1MXXXX0H.A0000123.001.4"


def reference_steps(checked: str) -> list[int]:
    """ISO/IEC 7064 §5 hybrid MOD 37,36 written out as docs/certificates.md gives it,
    independently of stdnum: p after each character."""
    return reference_steps_from(36, checked)


def reference_steps_from(p: int, checked: str) -> list[int]:
    steps = []
    for c in checked:
        s = (p + ALPHABET.index(c)) % 36 or 36
        p = (2 * s) % 37
        steps.append(p)
    return steps


def reference_check(checked: str) -> str:
    return ALPHABET[(1 - reference_steps(checked)[-1]) % 36]


@st.composite
def parts(draw: st.DrawFn) -> tuple[str, str, str, str]:
    return (draw(st.from_regex(r"[0-9]{1,8}", fullmatch=True)), draw(credit_codes()),
            draw(st.text(ALPHABET, min_size=1, max_size=32)),
            draw(st.from_regex(r"[0-9]{3}", fullmatch=True)))


identifiers = parts().map(lambda p: format_id(*p))


@given(parts())
def test_round_trip(p: tuple[str, str, str, str]) -> None:
    text = format_id(*p)
    cid = parse(text)
    assert (cid.type_code, cid.issuer_code, cid.serial, cid.version) == p
    assert str(cid) == text and cid == CertificateId.make(*p)
    assert len(text) <= MAX_LENGTH
    assert cid.issuer_division == p[1][2:8]


@given(parts())
def test_check_is_iso_7064_mod_37_36(p: tuple[str, str, str, str]) -> None:
    checked = "".join(p)
    check = check_character(*p)
    assert check == reference_check(checked) == mod_37_36.calc_check_digit(checked)
    assert mod_37_36.is_valid(checked + check)
    assert format_id(*p).endswith("." + check)


def test_reference_matches_iso_example() -> None:
    assert reference_check("A12425GABC1234002") == "M"  # ISO 7064's MOD 37,36 example


def _refused(text: str) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as info:
        parse(text, field="certificates[2].id")
    assert info.value.field == "certificates[2].id"
    return info.value


@given(identifiers, st.data())
def test_every_substitution_is_refused(text: str, data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(text) - 1))
    for c in ALPHABET + ".a":
        if c != text[i]:
            _refused(text[:i] + c + text[i + 1:])


def _neighbours(a: str, b: str) -> bool:
    """Values one apart, cyclically (0 and Z too): the only transpositions MOD 37,36
    can miss."""
    return (ALPHABET.index(a) - ALPHABET.index(b)) % 36 in (1, 35)


@given(identifiers)
def test_adjacent_transpositions_are_refused(text: str) -> None:
    """Every adjacent transposition is refused, except possibly one of two characters
    whose values are neighbours (see test_what_mod_37_36_misses)."""
    for i in range(len(text) - 1):
        a, b = text[i], text[i + 1]
        if a != b and not ("." not in (a, b) and _neighbours(a, b)):
            _refused(text[:i] + b + a + text[i + 2:])


@given(parts())
def test_mod_37_36_detects_substitutions_and_transpositions(
        p: tuple[str, str, str, str]) -> None:
    """The guarantee itself, on the checked string: nothing else (formats, the credit
    code's own check) gets the credit."""
    full = "".join(p) + check_character(*p)
    for i in range(len(full)):
        for c in ALPHABET:
            if c != full[i]:
                assert mod_37_36.checksum(full[:i] + c + full[i + 1:]) != 1
        if i + 1 < len(full) and full[i] != full[i + 1] and not _neighbours(*full[i:i + 2]):
            assert mod_37_36.checksum(full[:i] + full[i + 1] + full[i] + full[i + 2:]) != 1


def test_what_mod_37_36_misses() -> None:
    """Exhaustively, over the 36 states p before a pair and every ordered pair of
    different characters: a transposition goes unnoticed in exactly 72 of 45,360 cases
    (1 in 630), always two value-neighbours, one unordered pair for each state. The doc
    says so and shows one."""
    missed = []
    for p in range(1, 37):
        for a in ALPHABET:
            for b in ALPHABET:
                if a != b and reference_steps_from(p, a + b)[-1] == \
                        reference_steps_from(p, b + a)[-1]:
                    missed.append((p, a, b))
    assert len(missed) == 72 and all(_neighbours(a, b) for _, a, b in missed)
    assert len({(p, frozenset((a, b))) for p, a, b in missed}) == 36 == len({p for p, _, _ in missed})
    assert check_character("589", "11000000000000000U", "0", "000") == "N" == \
        check_character("598", "11000000000000000U", "0", "000")
    doc = (ROOT / "docs" / "certificates.md").read_text(encoding="utf-8")
    assert "72 of the 45,360" in doc and "check `N`" in doc


@pytest.mark.parametrize(("text", "says"), [
    ("", "starts with 1.2.156.3005.2."),
    ("1.2.156.3005.3.11.91320105MA1MXXXX0H.A0000123.001.4", "starts with"),
    ("1.2.156.3005.211.91320105MA1MXXXX0H.A0000123.001.4", "starts with"),
    (" " + EXAMPLE, "starts with"),
    (EXAMPLE + "\n", "'1.2.156.3005.2.11.91320105MA1MXXXX0H.A0000123.001.4\\n'"),
    (EXAMPLE + ".1", "not 6"),
    ("1.2.156.3005.2.11.91320105MA1MXXXX0H.A0000123.4", "not 4"),
    ("1.2.156.3005.2.11.91320105MA1MXXXX0H.A0000123..001.4", "not 6"),
    ("1.2.156.3005.2..91320105MA1MXXXX0H.A0000123.001.4", "type code"),
    ("1.2.156.3005.2.123456789.91320105MA1MXXXX0H.A0000123.001.4", "type code"),
    ("1.2.156.3005.2.1１.91320105MA1MXXXX0H.A0000123.001.4", "type code"),
    ("1.2.156.3005.2.11.91320105ma1mxxxx0h.A0000123.001.4", "issuer code"),
    ("1.2.156.3005.2.11.91320105-MA1MXXXX0H.A0000123.001.4", "issuer code"),
    ("1.2.156.3005.2.11.91320105MA1MXXXX0A.A0000123.001.4", "check character of the credit"),
    ("1.2.156.3005.2.11.91320105MA1MXXXX0H.a0000123.001.4", "serial"),
    ("1.2.156.3005.2.11.91320105MA1MXXXX0H..001.4", "serial"),
    ("1.2.156.3005.2.11.91320105MA1MXXXX0H." + "A" * 33 + ".001.4", "serial"),
    ("1.2.156.3005.2.11.91320105MA1MXXXX0H.A0000123.01.4", "version"),
    ("1.2.156.3005.2.11.91320105MA1MXXXX0H.A0000123.0001.4", "version"),
    ("1.2.156.3005.2.11.91320105MA1MXXXX0H.A0000123.001.", "the check is one of"),
    ("1.2.156.3005.2.11.91320105MA1MXXXX0H.A0000123.001.44", "the check is one of"),
    ("1.2.156.3005.2.11.91320105MA1MXXXX0H.A0000123.001.5", "check character is wrong"),
    ("1.2.156.3005.2.11.91320105MA1MXXXX0H.A0000124.001.4", "check character is wrong"),
    ("1.2.156.3005.2.11.91320105MA1MXXXX0H.A0000132.001.4", "check character is wrong"),
    ("1.2.156.3005.2.11.91320105MA1MXXXX0H.A000012.3001.4", "version"),
    (PREFIX + "." + "1" * 10 ** 6, "at most 81 characters"),
])
def test_bad_identifiers_are_invalid_argument(text: str, says: str) -> None:
    error = _refused(text)
    assert says in error.message
    assert error.code.name == "INVALID_ARGUMENT"
    assert len(error.details()) <= 300 and "\n" not in error.details()
    assert error.details().startswith("certificates[2].id: ")


def test_default_field_and_quote() -> None:
    with pytest.raises(InvalidArgument) as info:
        parse(EXAMPLE[:-1] + "5")
    assert info.value.field == "certificate_id"
    assert repr(EXAMPLE[:-1] + "5") in info.value.message


def test_constructor_refuses_a_wrong_check() -> None:
    with pytest.raises(InvalidArgument, match="check character is wrong"):
        CertificateId("11", "91320105MA1MXXXX0H", "A0000123", "001", "5")
    with pytest.raises(InvalidArgument, match="version"):
        CertificateId.make("11", "91320105MA1MXXXX0H", "A0000123", "1")


def test_worked_example_is_current() -> None:
    doc = (ROOT / "docs" / "certificates.md").read_text(encoding="utf-8")
    cid = CertificateId.make("11", "91320105MA1MXXXX0H", "A0000123", "001")
    checked = cid.type_code + cid.issuer_code + cid.serial + cid.version
    steps = reference_steps(checked)
    assert str(cid) == EXAMPLE and f"identifier: `{EXAMPLE}`" in doc
    assert f"checked string: `{checked}` ({len(checked)} characters)" in doc
    assert "p after each character: `" + " ".join(map(str, steps)) + "`" in doc
    assert f"(1 − {steps[-1]}) mod 36 = {ALPHABET.index(cid.check)}" in doc
    assert f"registered in {cid.issuer_division}" in doc
    assert f"at most {MAX_LENGTH} characters" in doc
    assert parse(EXAMPLE) == cid
    # the two mistakes the doc names are refused
    for wrong in re.findall(r"\(say serial `(\w+)`\)|\(`(\w+)`\)", doc):
        _refused(EXAMPLE.replace("A0000123", "".join(wrong)))


@pytest.mark.parametrize("letter", "IOSVZ")
def test_credit_code_type_outside_gb_32100_set_is_invalid_argument(letter: str) -> None:
    """Found by the substitution test: a type character (position 2) outside GB 32100's
    31-character set reached stdnum's arithmetic and raised ValueError (INTERNAL)."""
    with pytest.raises(InvalidArgument, match="unified social credit code"):
        check_credit_code(f"9{letter}320105MA1MXXXX0H", field="applicant.id_number")
    _refused(EXAMPLE.replace("91320105", f"9{letter}320105"))
