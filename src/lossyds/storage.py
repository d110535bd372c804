"""Failures of object storage, told in one sentence.

fsspec's filesystems raise their libraries' own exceptions when a store cannot be reached
(botocore's EndpointConnectionError, aiohttp's connection errors, timeouts), with tracebacks
of a hundred lines or more. `storage_errors` turns those, and plain OSErrors, into one
LossydsError that names the URL.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from .errors import LossydsError
from .location import is_url

_STORAGE_LIBRARIES = ("botocore", "aiobotocore", "aiohttp", "urllib3", "requests", "s3fs", "gcsfs", "adlfs", "fsspec")


class StorageError(LossydsError):
    """Object storage could not be reached, or refused or failed a request."""


def is_storage_failure(exc: BaseException) -> bool:
    """An OSError, a timeout, or an exception of a storage client library."""
    if isinstance(exc, (OSError, TimeoutError, ConnectionError)):
        return True
    return any(cls.__module__.split(".", 1)[0] in _STORAGE_LIBRARIES for cls in type(exc).__mro__)


def failure_reason(exc: BaseException) -> str:
    reason = str(getattr(exc, "strerror", None) or exc or type(exc).__name__)
    return reason.strip().rstrip(".").splitlines()[0] if reason.strip() else type(exc).__name__


@contextlib.contextmanager
def storage_errors(location: str | Path, doing: str, hint: str = "") -> Iterator[None]:
    """Re-raise a storage failure while the block runs against the URL `location` as a
    StorageError: "`doing` LOCATION failed: REASON[; HINT]." Local paths pass errors through."""
    try:
        yield
    except LossydsError:
        raise
    except Exception as exc:
        if not is_url(location) or not is_storage_failure(exc):
            raise
        tail = f"; {hint}" if hint else ""
        raise StorageError(f"{doing} {location} failed: {failure_reason(exc)}{tail}.") from None
