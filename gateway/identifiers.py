"""Check digits of citizen id numbers (GB 11643) and credit codes (GB 32100). No I/O.

python-stdnum does the arithmetic. ``ric.validate`` also refuses an address code that did
not exist in the holder's birth year; real people hold such numbers (registered later,
or in a district since merged), so that case is not refused here: it is a routing
question for gateway/routing.py (DESIGN §3).
"""

from __future__ import annotations

import re
from datetime import date

from stdnum.cn import ric, uscc

from gateway.errors import InvalidArgument

RESIDENT_ID = re.compile(r"[0-9]{17}[0-9X]")
# GB 32100 §4: department (1), type (2), 登记管理机关行政区划码 (3–8), 主体标识码 (9–17),
# check (18); every character from its 31-character set (no I O S V Z): uscc's arithmetic
# raises ValueError on any other
CREDIT_CODE = re.compile(r"[1-9ANY][0-9A-HJ-NP-RTUW-Y][0-9]{6}[0-9A-HJ-NP-RTUW-Y]{10}")


def check_resident_id(number: str, *, field: str) -> str:
    """Validate a GB 11643 居民身份证号码 (length, format, birth date, ISO 7064 MOD 11-2)."""
    if not number.isascii():
        raise InvalidArgument("a resident id number is ASCII digits and X", field=field)
    # already compact (the common case): skip stdnum's character-by-character clean-up
    compact = number if RESIDENT_ID.fullmatch(number) else ric.compact(number)
    if len(compact) != 18:
        raise InvalidArgument("a resident id number has 18 characters", field=field)
    # ASCII only: str.isdigit() and \d also accept digits such as "𝟎" (found by hypothesis)
    if not RESIDENT_ID.fullmatch(compact):
        raise InvalidArgument("a resident id number is 17 digits and a digit or X", field=field)
    try:  # what ric.get_birth_date does, without compacting the number a second time
        date(int(compact[6:10]), int(compact[10:12]), int(compact[12:14]))
    except ValueError:
        raise InvalidArgument("the birth date in the id number is not a date",
                              field=field) from None
    if compact[-1] != ric.calc_check_digit(compact):
        raise InvalidArgument("the check digit of the id number is wrong", field=field)
    return compact


def check_credit_code(number: str, *, field: str) -> str:
    """Validate a GB 32100 统一社会信用代码 (18 characters, MOD 31 check character).

    stdnum's ``uscc.validate`` wants digits in positions 1–8, but GB 32100 §4 lets the
    registration department (position 1) be A, N or Y as well (e.g. 农村集体经济组织
    codes start with N), so the format is checked here and stdnum does the arithmetic.
    """
    if number in _VALID_CODES:  # the same few issuer codes are in every document
        return number
    if not number.isascii():
        raise InvalidArgument("a credit code is ASCII letters and digits", field=field)
    code = uscc.compact(number)
    if len(code) != 18:
        raise InvalidArgument("a credit code has 18 characters", field=field)
    if not CREDIT_CODE.fullmatch(code):
        raise InvalidArgument("not a unified social credit code: GB 32100 wants a department "
                              "code, a type, six division digits and nine code characters",
                              field=field)
    if code[-1] != uscc.calc_check_digit(code[:-1]):
        raise InvalidArgument("the check character of the credit code is wrong", field=field)
    if code == number:
        _VALID_CODES.add(code)
    return code


class _Seen:
    """A bounded set of strings already found valid: the check is a pure function of the
    string, so the answer never goes stale; once full it starts again (no eviction
    bookkeeping on the hot path), so a flood of distinct codes costs only memory bounded
    by ``size``."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: set[str] = set()

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def add(self, item: str) -> None:
        if len(self._items) >= self.size:
            self._items.clear()
        self._items.add(item)


_VALID_CODES = _Seen(4096)


def registering_division(id_type_resident: bool, number: str) -> str:
    """The division that registered the holder: GB 11643 digits 1–6, GB 32100 chars 3–8."""
    return number[:6] if id_type_resident else number[2:8]


def mask_id(number: str) -> str:
    """Mask an id number for logs and audit text: keep the first 6 and last 4 (DESIGN §7)."""
    if len(number) <= 10:
        return "*" * len(number)
    return number[:6] + "*" * (len(number) - 10) + number[-4:]


def mask_phone(number: str) -> str:
    """Mask a phone number: keep the first 3 and last 4."""
    if len(number) <= 7:
        return "*" * len(number)
    return number[:3] + "*" * (len(number) - 7) + number[-4:]


# In free text people write numbers as they read them: grouped with spaces or hyphens
# (an id as 6-8-4 or 6-4-4-4, a mobile as 3-4-4), a mobile after +86/0086, and in
# full-width digits from a Chinese input method. D is a digit of either width; S an
# optional single separator at a group boundary.
_D = "[0-9\uff10-\uff19]"
_S = "[ \\-\u3000]?"
_ID_IN_TEXT = re.compile(
    rf"(?<![0-9A-Za-z\uff10-\uff19])({_D}{{6}}{_S}{_D}{{4}}{_S}{_D}{{4}}{_S}{_D}{{3}}"
    rf"[0-9Xx\uff10-\uff19\uff38\uff58]|[0-9A-Z]{{18}})(?![0-9A-Za-z\uff10-\uff19])")
_PHONE_IN_TEXT = re.compile(
    rf"(?<![0-9\uff10-\uff19])((?:(?:\+|\uff0b|00){_S})?86{_S})?"
    rf"([1\uff11][3-9\uff13-\uff19]{_D}{_S}{_D}{{4}}{_S}{_D}{{4}})(?![0-9\uff10-\uff19])")
_NARROW = str.maketrans("０１２３４５６７８９Ｘｘ", "0123456789Xx", " -\u3000")


def mask_text(text: str) -> str:
    """Mask every id number, credit code and mobile number in free text (logs, audit),
    however grouped or wide its digits; a masked number is written compact, narrow."""
    if not any(c.isdigit() for c in text):  # the common case: nothing to mask
        return text
    text = _ID_IN_TEXT.sub(lambda m: mask_id(m.group(1).translate(_NARROW)), text)
    return _PHONE_IN_TEXT.sub(
        lambda m: (m.group(1) or "") + mask_phone(m.group(2).translate(_NARROW)), text)
