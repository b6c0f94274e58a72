"""The GatewayError family: each error carries its gRPC status and, for bad input, a field path.

Errors are translated to gRPC statuses in one place (gateway/server.py); a raw library
exception reaching a caller is a bug and shows as INTERNAL.
"""

from __future__ import annotations

import grpc


class GatewayError(Exception):
    """Base of every error the gateway reports to a caller."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "INTERNAL"

    def __init__(self, message: str, *, field: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def details(self) -> str:
        """The status message: the field path first where there is one."""
        return f"{self.field}: {self.message}" if self.field else self.message


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


class ConfigError(Exception):
    """partners.toml is unusable; the message is one line naming file, line and key path."""
