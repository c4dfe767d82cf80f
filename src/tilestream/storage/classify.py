"""Which failures of fsspec, s3fs, gcsfs, aiohttp and botocore are transient, and what they mean.

:func:`classify` walks an exception and its causes (s3fs wraps botocore's
``ClientError`` in a builtin ``OSError``) and returns a
:class:`~tilestream.storage.retry.Failure`. Classes are recognised by name, so
nothing here imports the optional libraries. The reason names the error code
and HTTP status the store answered, and the store's own short message for
S3 errors; never a request, a header or a credential.

Examples
--------
>>> classify(ConnectionResetError(104, "reset")).kind
'transient'
>>> classify(FileNotFoundError("bucket/key")).reason
'no such object'
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

from .retry import Failure

__all__ = ["classify", "error_chain", "is_precondition_failed"]

#: Exception class names (anywhere in the MRO) that mean "try again".
_TRANSIENT_NAMES = frozenset(
    {
        # aiohttp
        "ClientPayloadError",
        "ServerDisconnectedError",
        "ClientConnectionError",
        "ClientOSError",
        "ServerTimeoutError",
        "ClientConnectorError",
        # botocore / aiobotocore
        "EndpointConnectionError",
        "ConnectionClosedError",
        "ReadTimeoutError",
        "ConnectTimeoutError",
        "ResponseStreamingError",
        "IncompleteReadError",
        "HTTPClientError",
        "ResponseParserError",
        # urllib3, http.client, fsspec
        "ProtocolError",
        "IncompleteRead",
        "RemoteDisconnected",
        "FSTimeoutError",
    }
)
_THROTTLE_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded", "TooManyRequests"}
)
_TRANSIENT_CODES = frozenset(
    {"InternalError", "ServiceUnavailable", "RequestTimeout", "ConditionalRequestConflict"}
)
_NOT_FOUND_CODES = {"NoSuchKey": "no such object", "NoSuchBucket": "no such bucket"}
_CREDENTIAL_CODES = frozenset(
    {"SignatureDoesNotMatch", "InvalidAccessKeyId", "InvalidToken", "ExpiredToken"}
)


def error_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc``, then its causes and contexts (each once)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _response(exc: BaseException) -> tuple[int | None, str | None, str | None]:
    """HTTP status, error code and the server's message of a botocore or aiohttp error."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore ClientError
        error = response.get("Error") or {}
        meta = response.get("ResponseMetadata") or {}
        status = meta.get("HTTPStatusCode")
        code = error.get("Code")
        message = error.get("Message")
        return (
            int(status) if status is not None else None,
            str(code) if code else None,
            str(message)[:200] if message else None,
        )
    status = getattr(exc, "status", None)  # aiohttp ClientResponseError
    if isinstance(status, int):
        return status, None, None
    code = getattr(exc, "code", None)  # gcsfs HttpError: the status in .code
    if "HttpError" in _names(exc) and isinstance(code, int) and 100 <= code < 600:
        return code, None, None
    return None, None, None


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _from_status(status: int | None, code: str | None, detail: str) -> Failure | None:
    label = code if code and code != str(status) else None
    what = ", ".join(x for x in (label, f"HTTP {status}" if status else None) if x)
    suffix = f" ({what})" if what else ""
    if code in _NOT_FOUND_CODES:
        return Failure("not_found", _NOT_FOUND_CODES[code])
    if status == 404:
        return Failure("not_found", "no such object" + suffix)
    if code in _CREDENTIAL_CODES:
        return Failure("denied", f"the credentials were refused{suffix}")
    if status in (401, 403) or code == "AccessDenied":
        return Failure("denied", f"access denied{suffix}: check the credentials and the policy")
    if code in _THROTTLE_CODES or status == 429:
        return Failure("throttled", f"the store asks to slow down{suffix}")
    if code in _TRANSIENT_CODES or (status is not None and status >= 500):
        return Failure("transient", f"the store failed{suffix}")
    if status is not None or code is not None:
        return Failure("other", f"the store refused the request{suffix}{detail}")
    return None


def classify(exc: BaseException) -> Failure:
    """Classify a failure of an fsspec call (see the module's documentation)."""
    chain = list(error_chain(exc))
    for e in chain:  # an answer from the server says the most
        status, code, message = _response(e)
        found = _from_status(status, code, f": {message}" if message else "")
        if found is not None:
            return found
    for e in chain:
        names = _names(e)
        if names & _TRANSIENT_NAMES or isinstance(
            e, ConnectionError | TimeoutError | asyncio.TimeoutError | socket.timeout
        ):
            return Failure("transient", f"connection failed ({type(e).__name__})")
    for e in chain:
        if isinstance(e, FileNotFoundError):
            return Failure("not_found", "no such object")
        if isinstance(e, PermissionError) or (
            type(e) is OSError and str(e).startswith("Forbidden")  # gcsfs's 403
        ):
            return Failure("denied", "access denied: check the credentials and the policy")
        if isinstance(e, NotImplementedError):
            return Failure("read_only", "the store does not support this operation")
    return Failure("other", f"{type(exc).__name__}")


def is_precondition_failed(exc: BaseException) -> bool:
    """Whether a conditional write failed because the object exists (HTTP 412).

    gcsfs turns GCS's 412 into a ``FileExistsError``.
    """
    for e in error_chain(exc):
        if isinstance(e, FileExistsError):
            return True
        status, code, _ = _response(e)
        if status == 412 or code == "PreconditionFailed":
            return True
    return False
