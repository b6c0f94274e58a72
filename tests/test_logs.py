"""Log lines are JSON objects, one per line, whatever the message holds (issue #12)."""

from __future__ import annotations

import io
import json
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.logs import JsonFormatter, sanitize

FORGED = '"}\n{"t":"2026-01-01T00:00:00Z","level":"CRITICAL","logger":"tongban","msg":"pwned'


def lines_of(message: str, *args: object, **extra: object) -> list[str]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tongban.test.logs")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        logger.warning(message, *args, extra=extra)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue().splitlines()


def test_a_forged_line_stays_inside_its_message() -> None:
    """The attack: a peer's error text holding a newline and a whole CRITICAL line."""
    lines = lines_of("delivery to %s failed: %s", "320000-gw", FORGED, case_id="01J",
                     trace="abc")
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["level"] == "WARNING" and record["logger"] == "tongban.test.logs"
    assert record["msg"] == f"delivery to 320000-gw failed: {FORGED}"
    assert (record["case_id"], record["trace"]) == ("01J", "abc")


def test_id_numbers_in_messages_are_masked() -> None:
    record = json.loads(lines_of("holder %s", "110105 19491231 002X")[0])
    assert record["msg"] == "holder 110105********002X"


@given(st.text())
def test_any_message_is_one_json_line(message: str) -> None:
    lines = lines_of("%s", message)
    assert len(lines) == 1
    assert "msg" in json.loads(lines[0])


@pytest.mark.parametrize(("text", "clean"), [
    ("ok", "ok"),
    ("two\nlines", "two\\nlines"),
    ('x\r\n{"level":"CRITICAL"}', 'x\\r\\n{"level":"CRITICAL"}'),
    ("a" * 500, "a" * 199 + "…"),
])
def test_peer_text_is_sanitised(text: str, clean: str) -> None:
    assert sanitize(text) == clean
