"""Errors from memd, one class per gRPC status code that a caller may want to handle."""

from __future__ import annotations

from typing import Dict, Optional, Type

import grpc
from google.rpc import error_details_pb2, status_pb2


class MemdError(Exception):
    """A call to memd failed. ``code`` is the gRPC status code, ``details`` memd's message
    (which names the offending field for invalid arguments), ``retry_after`` the seconds memd
    asked the caller to wait before trying again (its ``google.rpc.RetryInfo``), or None."""

    def __init__(self, code: grpc.StatusCode, details: str, retry_after: Optional[float] = None) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details
        self.retry_after = retry_after


class InvalidArgument(MemdError):
    """A request field is malformed or out of bounds (the message names it)."""


class NotFound(MemdError):
    """The memory, actor, session, event or record does not exist (or is not visible)."""


class AlreadyExists(MemdError):
    """An idempotency token was reused with a different request."""


class FailedPrecondition(MemdError):
    """The resource is in the wrong state, e.g. appending to a terminated session."""


class PermissionDenied(MemdError):
    """The API key's policy does not allow this."""


class Unauthenticated(MemdError):
    """No API key, or an unknown or revoked one."""


class ResourceExhausted(MemdError):
    """A quota refused the call (``retry_after`` says how long to wait), the server's disk is
    full (writes only), too much work is queued, or a watch stream was not read in time."""


class OutOfRange(MemdError):
    """A watch cursor older than the server's change log retention."""


class Unavailable(MemdError):
    """memd cannot be reached, or a part it needs is down; retrying may help."""


_BY_CODE: Dict[grpc.StatusCode, Type[MemdError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRange,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
}


def retry_delay(error: grpc.RpcError) -> Optional[float]:
    """The wait in seconds that a failed call's ``google.rpc.RetryInfo`` detail asks for."""
    trailing = error.trailing_metadata() if hasattr(error, "trailing_metadata") else None
    for key, value in trailing or ():
        if key != "grpc-status-details-bin":
            continue
        try:
            status = status_pb2.Status.FromString(value)
        except Exception:  # a malformed detail is no reason to hide the error itself
            return None
        for detail in status.details:
            info = error_details_pb2.RetryInfo()
            if detail.Unpack(info):
                return float(info.retry_delay.ToTimedelta().total_seconds())
    return None


def from_rpc_error(error: grpc.RpcError) -> MemdError:
    """The MemdError for a failed call."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = (error.details() if hasattr(error, "details") else None) or str(error)
    return _BY_CODE.get(code, MemdError)(code, details, retry_delay(error))
