"""Working-day arithmetic for 承诺时限 and 整改 deadlines (China time, no I/O).

A time limit of N working days ends at 24:00 (UTC+8) of the N-th working day after the
day the clock starts; the starting day itself does not count, as in the 政务服务 rules.
Weekends are off unless listed as 调休 make-up workdays; listed public holidays are off.
The official holiday schedule is published each year by the State Council, so it comes
from configuration (`[calendar]`), never from code.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

CHINA = timezone(timedelta(hours=8), "CST")


@dataclass(frozen=True, slots=True)
class WorkCalendar:
    holidays: frozenset[date] = frozenset()
    extra_workdays: frozenset[date] = frozenset()

    def is_workday(self, day: date) -> bool:
        if day in self.extra_workdays:
            return True
        return day.weekday() < 5 and day not in self.holidays

    def add(self, start: float, days: int) -> float:
        """End of the `days`-th working day after the day of `start` (epoch seconds)."""
        return self._end(datetime.fromtimestamp(start, CHINA).date(), days)

    @functools.lru_cache(maxsize=1024)  # noqa: B019 (calendars live as long as the config)
    def _end(self, day: date, days: int) -> float:
        """Every case of a day with the same time limit has the same deadline."""
        counted = 0
        while counted < days:
            day += timedelta(days=1)
            counted += self.is_workday(day)
        return datetime.combine(day + timedelta(days=1), time(), CHINA).timestamp()
