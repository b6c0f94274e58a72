"""The GatewayError family: each error carries its gRPC status and, for bad input, a field path.

Errors are translated to gRPC statuses in one place (gateway/server.py); a raw library
exception reaching a caller is a bug and shows as INTERNAL.
"""

from __future__ import annotations

import grpc

DETAILS_LIMIT = 300  # characters of a status message (and of an audit entry's detail)
FIELD_LIMIT = 120  # characters of a field path


def clean(text: str, limit: int) -> str:
    """text with every non-printable character escaped (newlines, controls, lone
    surrogates, U+2028...), cut to at most limit characters: what a caller sent can
    neither forge a line of a log nor make a status or an audit row large."""
    if len(text) > 4 * limit:
        text = text[:4 * limit]  # an escape is at most 10 characters: enough is kept
    if not text.isprintable():
        text = "".join(c if c.isprintable() else _escape(c) for c in text)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _escape(char: str) -> str:
    return repr(char)[1:-1]  # \n, \x00, \u2028, \ud800: never a raw line break


def quote(value: object, limit: int = 64) -> str:
    """A caller's value for a message: quoted, escaped and at most limit characters of
    it, plus how long it was when cut (`'JY-20…' (3145728 characters)`)."""
    text = value if isinstance(value, str) else str(value)
    shown = clean(text, limit)
    if len(text) <= limit and shown == text:
        return repr(text)
    tail = f" ({len(text)} characters)" if len(text) > limit else ""
    return f"'{shown}'{tail}"


class GatewayError(Exception):
    """Base of every error the gateway reports to a caller."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "INTERNAL"

    def __init__(self, message: str, *, field: str = "") -> None:
        # capped and escaped here, once, so every use (status message, BadRequest
        # detail, audit entry, log line) is short and one line whatever the caller sent
        message, field = clean(message, DETAILS_LIMIT), clean(field, FIELD_LIMIT)
        super().__init__(message)
        self.message = message
        self.field = field

    def details(self) -> str:
        """The status message: the field path first where there is one (at most
        DETAILS_LIMIT characters)."""
        return clean(f"{self.field}: {self.message}", DETAILS_LIMIT) if self.field \
            else self.message


class Unauthenticated(GatewayError):
    code = grpc.StatusCode.UNAUTHENTICATED
    reason = "BAD_SIGNATURE"


class PermissionDenied(GatewayError):
    code = grpc.StatusCode.PERMISSION_DENIED
    reason = "NOT_ALLOWED"


class InvalidArgument(GatewayError):
    code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "INVALID_FIELD"


class NotFound(GatewayError):
    code = grpc.StatusCode.NOT_FOUND
    reason = "NOT_FOUND"


class FailedPrecondition(GatewayError):
    code = grpc.StatusCode.FAILED_PRECONDITION
    reason = "BAD_STATE"


class Unavailable(GatewayError):
    code = grpc.StatusCode.UNAVAILABLE
    reason = "UNAVAILABLE"


class StoreUnavailable(Unavailable):
    """The store cannot write now (disk full, I/O error): retry later. Its own class so
    the outbox can tell a local fault from a destination's (no breaker, no attempt)."""


class StoreClosed(StoreUnavailable):
    """The store is closing or closed: background loops end instead of retrying."""


class AlreadyExists(GatewayError):
    code = grpc.StatusCode.ALREADY_EXISTS
    reason = "CONFLICT"


class ResourceExhausted(GatewayError):
    """A caller is over a quota: its rate, concurrency or stream limit (gateway/limits.py)
    or its share of the replay cache; the status carries google.rpc.RetryInfo with
    retry_after_s as its retry_delay."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "QUOTA_EXHAUSTED"

    def __init__(self, message: str, *, retry_after_s: float = 1.0, reason: str = "") -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        if reason:
            self.reason = reason


class ConfigError(Exception):
    """partners.toml is unusable; the message is one line naming file, line and key path."""
