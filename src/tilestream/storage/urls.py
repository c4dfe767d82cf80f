"""From a URL or a path to a :class:`~tilestream.storage.Store` and a key: :func:`store_for`.

=================================  =====================  ===========================
URL                                store (its root)       key
=================================  =====================  ===========================
``/data/a.svs``, ``file:///...``   ``LocalStore("/")``    ``data/a.svs``
``s3://bucket/run/a.tfrecords``    ``FsspecStore`` bucket ``run/a.tfrecords``
``gs://bucket/a.svs``              ``FsspecStore`` bucket ``a.svs``
``https://host/x/a.svs``           ``FsspecStore`` site   ``x/a.svs`` (read-only)
=================================  =====================  ===========================

Credentials come from where each library looks (environment, ``~/.aws``,
fsspec's configuration) or from ``storage_options``; a URL that holds them
(``https://user:pw@host``) is refused. Nothing here logs or repeats them.

Examples
--------
>>> store, key = store_for("/tmp/slides/a.svs")
>>> type(store).__name__, key, store.url_of(key)
('LocalStore', 'tmp/slides/a.svs', '/tmp/slides/a.svs')
>>> redact_url("https://user:secret@example.org/a.svs?X-Amz-Signature=abc")
'https://example.org/a.svs'
"""

from __future__ import annotations

import copy
import os
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tilestream._util.optional import require
from tilestream.errors import ConfigError

from .base import Store, redact_url
from .fsspec_ import FsspecStore
from .local import LocalStore
from .retry import RetryPolicy

__all__ = ["EXTRAS", "is_url", "redact_url", "store_for"]

#: The tilestream extra, and the module it installs, for each protocol.
EXTRAS: dict[str, tuple[str, str]] = {
    "s3": ("s3", "s3fs"),
    "s3a": ("s3", "s3fs"),
    "gs": ("gcs", "gcsfs"),
    "gcs": ("gcs", "gcsfs"),
    "http": ("http", "aiohttp"),
    "https": ("http", "aiohttp"),
}
#: s3fs options tilestream sets unless ``storage_options`` does: one retry layer (ours;
#: ``retries`` is set on the filesystem, s3fs's own loop), timeouts, and no cached listings
#: (another writer's objects must be seen at once).
S3_DEFAULTS: dict[str, Any] = {
    "use_listings_cache": False,
    "retries": 1,
    "config_kwargs": {
        "retries": {"total_max_attempts": 1, "mode": "standard"},
        "connect_timeout": 10,
        "read_timeout": 60,
    },
}


def is_url(target: str | os.PathLike[str]) -> bool:
    """Whether ``target`` is a URL with a scheme other than ``file`` (not a local path).

    >>> is_url("s3://b/k"), is_url("/data/a.svs"), is_url("file:///data/a.svs"), is_url("C:/x")
    (True, False, False, False)
    """
    text = os.fspath(target)
    scheme = urllib.parse.urlsplit(text).scheme
    return len(scheme) > 1 and scheme != "file" and "://" in text


def _options(protocol: str, storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    given = dict(storage_options or {})
    if protocol not in ("s3", "s3a"):
        return given
    options = copy.deepcopy(S3_DEFAULTS)
    config = {**options.pop("config_kwargs"), **dict(given.pop("config_kwargs", None) or {})}
    options.update(given)
    options["config_kwargs"] = config
    return options


def _filesystem(protocol: str, options: Mapping[str, Any], where: str) -> Any:
    fsspec = require("fsspec", extra=EXTRAS.get(protocol, ("s3", ""))[0], purpose=where)
    if protocol in EXTRAS:
        extra, module = EXTRAS[protocol]
        require(module, extra=extra, purpose=f"{protocol}:// URLs ({where})")
    try:
        return fsspec.filesystem(protocol, **options)
    except (ImportError, ValueError) as exc:
        raise ConfigError(
            f"cannot open a {protocol}:// filesystem ({type(exc).__name__}); "
            "check storage_options and the installed fsspec backends",
            path=where,
        ) from None


def store_for(
    url: str | os.PathLike[str],
    storage_options: Mapping[str, Any] | None = None,
    *,
    retry: RetryPolicy | None = None,
) -> tuple[Store, str]:
    """The store holding ``url`` and the object's key in it (see the module's table).

    Parameters
    ----------
    url
        A local path, ``file://``, ``s3://``, ``gs://``, ``http(s)://`` or another
        fsspec URL.
    storage_options
        Passed to the fsspec filesystem (``key``, ``secret``, ``endpoint_url``,
        ``token``...); for S3, they override :data:`S3_DEFAULTS`.
    retry
        Retries of transient failures (default :class:`RetryPolicy`).

    Raises
    ------
    MissingDependencyError
        The extra the protocol needs is not installed (the message says which).
    ConfigError
        The URL holds credentials, or names no bucket.
    """
    text = os.fspath(url)
    if not is_url(text):
        path = Path(urllib.parse.urlsplit(text).path if text.startswith("file://") else text)
        path = Path(os.path.abspath(path))
        return LocalStore(path.anchor), path.relative_to(path.anchor).as_posix()
    parts = urllib.parse.urlsplit(text)
    safe = redact_url(text)
    if parts.username or parts.password:
        raise ConfigError(
            "credentials in a URL are refused; pass them in storage_options or the environment",
            path=safe,
        )
    protocol = parts.scheme
    options = _options(protocol, storage_options)
    retries = options.pop("retries", None)  # an attribute of s3fs, not an argument
    fs = _filesystem(protocol, options, safe)
    if retries is not None:
        fs.retries = int(retries)
    key = parts.path.lstrip("/")
    if protocol in ("http", "https"):
        if parts.query:
            key += "?" + parts.query
        origin = f"{protocol}://{parts.netloc}"
        return FsspecStore(fs, origin, url=origin, retry=retry, read_only=True), key
    if not parts.netloc:
        raise ConfigError(f"a {protocol}:// URL needs a bucket", path=safe)
    root = f"{protocol}://{parts.netloc}"
    return FsspecStore(fs, parts.netloc, url=root, retry=retry), key
