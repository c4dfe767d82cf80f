"""Bounded retries with exponential backoff and jitter for transient storage failures.

A backend classifies each failure (:class:`Failure`); transient ones (5xx, 503
``SlowDown``, 429, a reset connection, a timeout) are retried up to
``RetryPolicy.attempts`` times in all, waiting ``base_delay * 2**n`` (capped at
``max_delay``, with full jitter) between tries. When they persist, the last
failure becomes a :class:`~tilestream.errors.StorageUnavailableError` (or
:class:`~tilestream.errors.StorageThrottledError`) naming the URL and the
number of attempts.

Examples
--------
>>> policy = RetryPolicy(attempts=3, base_delay=0.0)
>>> calls = []
>>> def flaky():
...     calls.append(1)
...     if len(calls) < 3:
...         raise ConnectionResetError("reset")
...     return "ok"
>>> def classify(exc):
...     return Failure("transient", "connection reset")
>>> call_with_retries(flaky, url="s3://b/k", policy=policy, classify=classify), len(calls)
('ok', 3)
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

from tilestream.errors import (
    StorageAccessDeniedError,
    StorageError,
    StorageNotFoundError,
    StorageReadOnlyError,
    StorageThrottledError,
    StorageUnavailableError,
)

__all__ = ["Failure", "Kind", "RetryPolicy", "call_with_retries", "storage_error"]

logger = logging.getLogger("tilestream.storage")

T = TypeVar("T")
#: How a failure is treated: retried (``transient``, ``throttled``) or raised at once.
Kind = Literal["transient", "throttled", "not_found", "denied", "read_only", "other"]


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently transient failures are retried.

    Parameters
    ----------
    attempts
        Tries in all (1: no retry).
    base_delay
        Seconds before the first retry; doubled for each further one.
    max_delay
        The longest wait between two tries.
    """

    attempts: int = 5
    base_delay: float = 0.1
    max_delay: float = 5.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_delay < 0 or self.max_delay < 0:
            raise ValueError(f"invalid retry policy {self!r}")

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (0-based), with full jitter."""
        cap = min(self.max_delay, self.base_delay * (2**retry))
        return random.uniform(0.0, cap) if cap > 0 else 0.0


@dataclass(frozen=True)
class Failure:
    """A classified failure: its ``kind`` and a short, secret-free ``reason``."""

    kind: Kind
    reason: str

    @property
    def retryable(self) -> bool:
        """Whether the same call may succeed if tried again."""
        return self.kind in ("transient", "throttled")


_ERRORS: dict[Kind, type[StorageError]] = {
    "transient": StorageUnavailableError,
    "throttled": StorageThrottledError,
    "not_found": StorageNotFoundError,
    "denied": StorageAccessDeniedError,
    "read_only": StorageReadOnlyError,
    "other": StorageError,
}


def storage_error(failure: Failure, url: str, *, attempts: int = 1) -> StorageError:
    """The :class:`StorageError` subclass for ``failure``, naming ``url``."""
    message = failure.reason
    if failure.retryable:
        message += f" (still failing after {attempts} attempt{'s' if attempts != 1 else ''})"
    return _ERRORS[failure.kind](message, path=url)


def call_with_retries(
    fn: Callable[[], T],
    *,
    url: str,
    policy: RetryPolicy,
    classify: Callable[[BaseException], Failure],
    on_retry: Callable[[], None] | None = None,
) -> T:
    """Call ``fn`` until it succeeds, a failure is not transient, or the attempts run out.

    ``url`` (already free of credentials) names the object in log lines and
    errors. Failures that are already a :class:`StorageError` pass through.
    The error raised is not chained to the library's exception (whose text
    may hold a signed URL): its message carries the classified reason.
    """
    for attempt in range(1, policy.attempts + 1):
        try:
            return fn()
        except StorageError:
            raise
        except Exception as exc:
            failure = classify(exc)
            if not failure.retryable or attempt == policy.attempts:
                # Not chained: the libraries' errors may repeat a signed URL or a header.
                raise storage_error(failure, url, attempts=attempt) from None
            wait = policy.delay(attempt - 1)
            logger.info(
                "%s: %s; retry %d of %d in %.2f s",
                url,
                failure.reason,
                attempt,
                policy.attempts - 1,
                wait,
            )
            if on_retry is not None:
                on_retry()
            time.sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover
