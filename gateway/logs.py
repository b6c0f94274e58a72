"""Log lines as JSON objects, one per line, and the sanitising of text from peers.

A log line is built by json.dumps, never by a format string: a message holding a quote,
a newline or a whole forged `{"level":"CRITICAL",...}` stays inside its "msg" string
(issue #12: a peer's error text forged a CRITICAL line). Messages are masked like the
audit log (DESIGN §7): id numbers and mobile numbers keep only their ends.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from gateway.errors import clean
from gateway.identifiers import mask_text

# attributes every LogRecord has; anything else was passed as extra=... and is logged
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName"}


_LINE_BREAKERS = {c: f"\\u{c:04x}" for c in (*range(0x7F, 0xA0), 0x2028, 0x2029)}


def sanitize(text: str, limit: int = 200) -> str:
    """Text another party chose (a peer's error details) as safe to log or re-raise:
    control characters and line breaks escaped, at most limit characters."""
    return clean(text, limit)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: t (UTC, RFC 3339), level, logger, msg, the fields
    passed as extra (case_id, trace, ...) and exc for a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "t": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": mask_text(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in out:
                out[key] = value if isinstance(value, (int, float, bool, type(None))) \
                    else mask_text(str(value))
        if record.exc_info:
            out["exc"] = mask_text(self.formatException(record.exc_info))
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        # ensure_ascii=False keeps 中文 readable; json.dumps escapes ", \ and the C0
        # controls; the other characters a line-based reader may break at (NEL, DEL
        # and the C1 controls, U+2028/2029) are escaped here
        line = json.dumps(out, ensure_ascii=False, default=str).translate(_LINE_BREAKERS)
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: written as its JSON escape
            line = line.encode("utf-8", "backslashreplace").decode("utf-8")
        return line


def install(level: str) -> None:
    """Log JSON lines to stderr at level (what `tongban serve` and the demo use)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=level.upper(), handlers=[handler])
