"""GB 11643 and GB 32100 check digits, and masking (hypothesis)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from stdnum.cn import ric, uscc

from gateway import ids
from gateway.errors import InvalidArgument
from gateway.identifiers import (
    check_credit_code,
    check_resident_id,
    mask_id,
    mask_phone,
    mask_text,
)

USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
birth = st.dates(min_value=__import__("datetime").date(1900, 1, 1),
                 max_value=__import__("datetime").date(2025, 12, 31))


@st.composite
def resident_ids(draw: st.DrawFn) -> str:
    area = draw(st.from_regex(r"[1-6][0-9]{5}", fullmatch=True))
    body = area + draw(birth).strftime("%Y%m%d") + draw(st.from_regex(r"[0-9]{3}", fullmatch=True))
    return body + ric.calc_check_digit(body + "0")


@st.composite
def credit_codes(draw: st.DrawFn) -> str:
    body = (draw(st.sampled_from("123456789ANY")) + draw(st.sampled_from("123459"))
            + draw(st.from_regex(r"[0-9]{6}", fullmatch=True))
            + draw(st.text(USCC_ALPHABET, min_size=9, max_size=9)))
    return body + uscc.calc_check_digit(body)


@given(resident_ids())
def test_valid_resident_ids_pass_even_with_unknown_address_codes(number: str) -> None:
    # the address code is random: many never existed, which is a routing question only
    assert check_resident_id(number, field="f") == number


@given(resident_ids(), st.integers(0, 16), st.integers(1, 9))
def test_any_single_digit_error_is_caught(number: str, pos: int, delta: int) -> None:
    digit = (int(number[pos]) + delta) % 10
    broken = number[:pos] + str(digit) + number[pos + 1:]
    if pos in range(6, 14):  # a changed date digit may make an impossible date instead
        with pytest.raises(InvalidArgument):
            check_resident_id(broken, field="f")
    else:
        with pytest.raises(InvalidArgument, match="check digit"):
            check_resident_id(broken, field="f")


@given(credit_codes())
def test_valid_credit_codes_pass(code: str) -> None:
    assert check_credit_code(code, field="f") == code


@given(credit_codes(), st.integers(0, 16), st.sampled_from(USCC_ALPHABET))
def test_credit_code_single_substitution_is_caught(code: str, pos: int, char: str) -> None:
    if code[pos] == char or (pos < 2 and char not in "0123456789"):
        return  # a letter in positions 1-2 may still be a valid department/type
    broken = code[:pos] + char + code[pos + 1:]
    with pytest.raises(InvalidArgument) as err:
        check_credit_code(broken, field="applicant.id_number")
    assert err.value.field == "applicant.id_number"


@pytest.mark.parametrize(("number", "why"), [
    ("1101051949123100", "18 characters"),
    ("11010519491231002Y", "17 digits"),
    ("11010519490231002X", "birth date"),
])
def test_resident_id_errors_say_what_is_wrong(number: str, why: str) -> None:
    with pytest.raises(InvalidArgument, match=why):
        check_resident_id(number, field="f")


@pytest.mark.parametrize("number", ["1000002000010100𝟎9", "１１０１０５１９４９１２３１００２X"])
def test_non_ascii_digits_are_refused(number: str) -> None:
    with pytest.raises(InvalidArgument):
        check_resident_id(number, field="f")


def test_credit_code_with_department_n_passes() -> None:
    body = "N2320105MA1MXXXX0"
    assert check_credit_code(body + uscc.calc_check_digit(body), field="f").startswith("N2")


def test_masking_keeps_first_six_and_last_four() -> None:
    assert mask_id("11010519491231002X") == "110105********002X"
    assert mask_phone("13812345678") == "138****5678"
    assert mask_id("short") == "*****"


@given(st.integers(min_value=0, max_value=2**48 - 1), st.binary(min_size=10, max_size=10))
def test_ulid_encoding_is_crockford_base32_of_time_and_randomness(
        ms: int, randomness: bytes) -> None:
    """new_ulid encodes through base32hex and a translation; the oracle is the plain
    5-bits-at-a-time definition (https://github.com/ulid/spec)."""
    value = (ms << 80) | int.from_bytes(randomness, "big")
    expected = "".join(ids._ALPHABET[(value >> shift) & 31] for shift in range(125, -5, -5))
    with mock_urandom(randomness):
        got = ids.new_ulid(ms / 1000 + 0.0004)  # inside the millisecond, never on its edge
    assert got == expected and len(got) == 26


@contextlib.contextmanager
def mock_urandom(data: bytes) -> Iterator[None]:
    """The ULID's randomness, fixed (the one thing here that is not a pure function)."""
    real = ids.os.urandom
    ids.os.urandom = lambda n: data[:n]  # type: ignore[assignment]
    try:
        yield
    finally:
        ids.os.urandom = real  # type: ignore[assignment]


WIDE = str.maketrans("0123456789X", "０１２３４５６７８９Ｘ")
SEPARATORS = st.sampled_from(["", " ", "-", "\u3000"])
# text around a number: no digits, no letters glued to it (an id inside a longer token
# such as a hash is left alone on purpose), but anything else, CJK included
surroundings = st.text(st.characters(blacklist_categories=["Nd", "No", "Nl", "Lu", "Ll", "Cs"]),
                       max_size=20).map(lambda t: f"{t} " if t else t)


@st.composite
def written_ids(draw: st.DrawFn) -> tuple[str, str]:
    """(an id number, as a person may write it: 6-8-4 or 6-4-4-4 groups, any width)."""
    number = draw(resident_ids())
    groups = draw(st.sampled_from([(6, 8, 4), (6, 4, 4, 4), (18,)]))
    sep, parts, at = draw(SEPARATORS), [], 0
    for size in groups:
        parts.append(number[at:at + size])
        at += size
    written = sep.join(parts)
    return number, written.translate(WIDE) if draw(st.booleans()) else written


@st.composite
def written_phones(draw: st.DrawFn) -> tuple[str, str]:
    number = draw(st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True))
    sep = draw(SEPARATORS)
    written = sep.join((number[:3], number[3:7], number[7:]))
    if draw(st.booleans()):
        written = written.translate(WIDE)
    prefix = draw(st.sampled_from(["", "+86 ", "+86", "0086 ", "86-"]))
    return number, prefix + written


def digits_of(text: str) -> str:
    return "".join(str(int(c)) for c in text if c.isdecimal())


@given(written_ids(), surroundings, surroundings)
def test_ids_are_masked_however_they_are_written(
        pair: tuple[str, str], before: str, after: str) -> None:
    number, written = pair
    masked = mask_text(f"{before}{written}{after}")
    assert digits_of(masked) == number[:6] + number[14:17] + (
        number[17] if number[17] != "X" else "")
    assert mask_id(number) in masked


@given(written_phones(), surroundings, surroundings)
def test_phones_are_masked_however_they_are_written(
        pair: tuple[str, str], before: str, after: str) -> None:
    number, written = pair
    masked = mask_text(f"{before}{written}{after}")
    prefix = digits_of(written)[:-11]  # 86 or 0086, kept
    assert digits_of(masked) == prefix + number[:3] + number[7:]  # the middle four are gone
    assert mask_phone(number) in masked


@pytest.mark.parametrize(("text", "masked"), [
    ("身份证 110105 19491231 002X。", "身份证 110105********002X。"),
    ("110105-19491231-002X", "110105********002X"),
    ("电话 +86 138 0013 8000", "电话 +86 138****8000"),
    ("138-0013-8000", "138****8000"),
    ("１３８００１３８０００", "138****8000"),
    ("orders 2026-01-01 cost 12 345", "orders 2026-01-01 cost 12 345"),
])
def test_masking_examples(text: str, masked: str) -> None:
    assert mask_text(text) == masked
