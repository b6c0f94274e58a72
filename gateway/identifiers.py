"""Check digits of citizen id numbers (GB 11643) and credit codes (GB 32100). No I/O.

python-stdnum does the arithmetic. ``ric.validate`` also refuses an address code that did
not exist in the holder's birth year; real people hold such numbers (registered later,
or in a district since merged), so that case is not refused here: it is a routing
question for gateway/routing.py (DESIGN §3).
"""

from __future__ import annotations

from stdnum import exceptions as stdnum_errors
from stdnum.cn import ric, uscc

from gateway.errors import InvalidArgument


def check_resident_id(number: str, *, field: str) -> str:
    """Validate a GB 11643 居民身份证号码 (length, format, birth date, ISO 7064 MOD 11-2)."""
    compact = ric.compact(number)
    if len(compact) != 18:
        raise InvalidArgument("a resident id number has 18 characters", field=field)
    if not compact[:-1].isdigit() or not (compact[-1].isdigit() or compact[-1] == "X"):
        raise InvalidArgument("a resident id number is 17 digits and a digit or X", field=field)
    try:
        ric.get_birth_date(compact)
    except stdnum_errors.ValidationError:
        raise InvalidArgument("the birth date in the id number is not a date", field=field) from None
    if compact[-1] != ric.calc_check_digit(compact):
        raise InvalidArgument("the check digit of the id number is wrong", field=field)
    return compact


def check_credit_code(number: str, *, field: str) -> str:
    """Validate a GB 32100 统一社会信用代码 (18 characters, MOD 31 check character)."""
    try:
        return str(uscc.validate(number))
    except stdnum_errors.InvalidLength:
        raise InvalidArgument("a credit code has 18 characters", field=field) from None
    except stdnum_errors.InvalidChecksum:
        raise InvalidArgument("the check character of the credit code is wrong",
                              field=field) from None
    except stdnum_errors.ValidationError as exc:
        raise InvalidArgument(f"not a unified social credit code: {exc}", field=field) from None


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
