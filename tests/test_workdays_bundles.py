"""Working-day arithmetic and bundle aggregation: pure functions, checked by hand and by
property."""

from __future__ import annotations

from datetime import date, datetime

from hypothesis import given
from hypothesis import strategies as st

from gateway.bundles import FAILED, PROGRESS, aggregate
from gateway.cases import State
from gateway.workdays import CHINA, WorkCalendar


def at(*args: int) -> float:
    return datetime(*args, tzinfo=CHINA).timestamp()  # type: ignore[misc]


def test_limits_end_at_midnight_after_the_nth_working_day() -> None:
    cal = WorkCalendar()
    # Monday 2026-11-23 09:00: 3 working days are Tue, Wed, Thu -> Friday 00:00
    assert cal.add(at(2026, 11, 23, 9), 3) == at(2026, 11, 27)
    # Friday afternoon: Mon, Tue -> Wednesday 00:00 (the weekend does not count)
    assert cal.add(at(2026, 11, 27, 16), 2) == at(2026, 12, 2)
    # late Sunday night in China is still Sunday, whatever UTC says
    assert cal.add(at(2026, 11, 29, 23, 30), 1) == at(2026, 12, 1)


def test_holidays_and_make_up_workdays_come_from_the_calendar() -> None:
    cal = WorkCalendar(holidays=frozenset(date(2026, 10, d) for d in range(1, 8)),
                       extra_workdays=frozenset({date(2026, 10, 10)}))
    # Wed 2026-09-30: the National Day week is off, Sat 10-10 is a 调休 workday
    assert cal.add(at(2026, 9, 30, 10), 1) == at(2026, 10, 9)  # Thu 10-08
    assert cal.add(at(2026, 9, 30, 10), 3) == at(2026, 10, 11)  # 10-08, 10-09, 10-10
    assert not cal.is_workday(date(2026, 10, 5)) and cal.is_workday(date(2026, 10, 10))


@given(st.floats(min_value=at(2026, 1, 1), max_value=at(2027, 12, 31)),
       st.integers(min_value=1, max_value=60))
def test_n_working_days_hold_exactly_n_workdays(start: float, days: int) -> None:
    cal = WorkCalendar(holidays=frozenset({date(2026, 10, 1), date(2027, 2, 10)}))
    end = cal.add(start, days)
    first = datetime.fromtimestamp(start, CHINA).date()
    last = datetime.fromtimestamp(end - 1, CHINA).date()
    span = [date.fromordinal(o) for o in range(first.toordinal() + 1, last.toordinal() + 1)]
    assert sum(cal.is_workday(d) for d in span) == days
    assert cal.is_workday(last)
    assert cal.add(start, days + 1) > end


def test_bundle_state_examples() -> None:
    s = State
    assert aggregate([s.COMPLETED, s.COMPLETED]) is s.COMPLETED
    assert aggregate([s.RESULT_DELIVERED, s.COMPLETED]) is s.COMPLETED
    assert aggregate([s.FORWARDED, s.PROCESSING]) is s.FORWARDED
    assert aggregate([s.COMPLETED, s.SUPPLEMENT_REQUESTED]) is s.SUPPLEMENT_REQUESTED
    assert aggregate([s.COMPLETED, s.REJECTED, s.CANCELLED]) is s.REJECTED
    assert aggregate([s.RESULT_DELIVERED, s.RESULT_DELIVERED]) is s.RESULT_DELIVERED


@given(st.lists(st.sampled_from(list(State)), min_size=1, max_size=6))
def test_bundle_state_properties(parts: list[State]) -> None:
    state = aggregate(parts)
    assert state in parts  # a bundle is always in a state one of its parts is in
    if not any(p in FAILED or p is State.SUPPLEMENT_REQUESTED for p in parts):
        assert all(PROGRESS.index(state) <= PROGRESS.index(p) for p in parts)
    if state is State.RESULT_DELIVERED:
        assert set(parts) == {State.RESULT_DELIVERED}
