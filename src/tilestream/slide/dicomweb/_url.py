"""DICOMweb slide URLs and credentials: parsing, redaction, and where secrets come from.

Nothing here needs the ``dicomweb`` extra. :class:`DicomWebURL` never keeps a
secret in what it prints: its :attr:`~DicomWebURL.url` (and ``str``/``repr``)
drop the userinfo and the query string; :class:`DicomWebAuth` hides its token
and password from ``repr``.
"""

from __future__ import annotations

import ipaddress
import os
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tilestream.errors import ConfigError, SlideError
from tilestream.storage import redact_url

__all__ = [
    "ENV_PASSWORD",
    "ENV_PASSWORD_FILE",
    "ENV_TOKEN",
    "ENV_TOKEN_FILE",
    "ENV_USER",
    "URL_SCHEMES",
    "DicomWebAuth",
    "DicomWebURL",
    "redact_url",
]

#: The URL schemes of a DICOMweb series read as a slide.
URL_SCHEMES = ("dicomweb+http", "dicomweb+https")
#: Environment variables the credentials are read from (the ``*_FILE`` ones name a file).
ENV_TOKEN = "TILESTREAM_DICOMWEB_TOKEN"
ENV_TOKEN_FILE = "TILESTREAM_DICOMWEB_TOKEN_FILE"
ENV_USER = "TILESTREAM_DICOMWEB_USER"
ENV_PASSWORD = "TILESTREAM_DICOMWEB_PASSWORD"
ENV_PASSWORD_FILE = "TILESTREAM_DICOMWEB_PASSWORD_FILE"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class DicomWebURL:
    """A ``dicomweb+http(s)://host[:port]/<root>/studies/<study>[/series/<series>]`` URL.

    Parse one with :meth:`parse`. Userinfo (``user:password@``) is used as
    basic-auth credentials when no other are given; a query string is ignored
    (never sent: HTTP libraries log request URLs at debug level). Neither is
    ever shown: ``str``, ``repr`` and :attr:`url` omit them.

    Examples
    --------
    >>> u = DicomWebURL.parse("dicomweb+http://u:pw@127.0.0.1:8042/dicom-web/studies/1.2/series/3.4")
    >>> u.url, u.base_url, u.study_uid, u.series_uid
    ('dicomweb+http://127.0.0.1:8042/dicom-web/studies/1.2/series/3.4', 'http://127.0.0.1:8042/dicom-web', '1.2', '3.4')
    >>> "pw" in repr(u)
    False
    """

    scheme: str  # "http" or "https"
    netloc: str  # host[:port], no userinfo
    root: str  # the DICOMweb root path, no trailing slash ("" or "/dicom-web")
    study_uid: str | None = None
    series_uid: str | None = None
    username: str | None = field(default=None, repr=False, compare=False)
    password: str | None = field(default=None, repr=False, compare=False)

    @classmethod
    def parse(cls, url: str, *, require_series: bool = True) -> DicomWebURL:
        """Parse a slide URL (``dicomweb+`` optional when ``require_series`` is False).

        Raises
        ------
        SlideError
            Not a DICOMweb URL, plain ``http`` to a host that is not loopback,
            or (with ``require_series``) no ``/studies/<uid>/series/<uid>``.
        """
        safe = redact_url(url)
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower().removeprefix("dicomweb+")
        if scheme not in ("http", "https") or not parts.hostname:
            raise SlideError(
                "not a DICOMweb URL (dicomweb+https://host/<root>/studies/<uid>/series/<uid>)",
                path=safe,
            )
        if scheme == "http" and not _is_loopback(parts.hostname):
            raise SlideError(
                "plain http is only allowed to a loopback host; use dicomweb+https://", path=safe
            )
        segments = [urllib.parse.unquote(s) for s in parts.path.split("/")]
        root, study, series = _split_path(segments)
        if require_series and (study is None or series is None):
            raise SlideError("the URL names no /studies/<uid>/series/<uid>", path=safe)
        netloc = urllib.parse.urlsplit(safe).netloc
        return cls(
            scheme=scheme,
            netloc=netloc,
            root=root,
            study_uid=study,
            series_uid=series,
            username=urllib.parse.unquote(parts.username) if parts.username else None,
            password=urllib.parse.unquote(parts.password) if parts.password else None,
        )

    @property
    def base_url(self) -> str:
        """The DICOMweb root, ``https://host[:port]/<root>`` (no credentials)."""
        return f"{self.scheme}://{self.netloc}{self.root}"

    @property
    def url(self) -> str:
        """The slide URL without credentials or query string."""
        out = f"dicomweb+{self.base_url}"
        if self.study_uid is not None:
            out += f"/studies/{self.study_uid}"
        if self.series_uid is not None:
            out += f"/series/{self.series_uid}"
        return out

    def series(self, study_uid: str, series_uid: str) -> DicomWebURL:
        """The URL of another series on the same server (credentials kept)."""
        return DicomWebURL(
            self.scheme,
            self.netloc,
            self.root,
            study_uid,
            series_uid,
            self.username,
            self.password,
        )

    def __str__(self) -> str:
        return self.url


def _split_path(segments: list[str]) -> tuple[str, str | None, str | None]:
    """``(root, study, series)`` from the path's segments."""
    if "studies" not in segments:
        root = "/".join(segments).rstrip("/")
        return root, None, None
    i = len(segments) - 1 - segments[::-1].index("studies")
    root = "/".join(segments[:i]).rstrip("/")
    rest = [s for s in segments[i + 1 :] if s]
    study = rest[0] if rest else None
    series = rest[2] if len(rest) >= 3 and rest[1] == "series" else None
    if len(rest) not in (1, 3) or (len(rest) == 3 and rest[1] != "series"):
        study = series = None
    return root, study, series


@dataclass(frozen=True)
class DicomWebAuth:
    """Credentials for a DICOMweb server: a bearer token, or basic auth.

    Never shown: ``repr`` says only which kind is set. :meth:`from_env` reads
    them from ``TILESTREAM_DICOMWEB_TOKEN`` (or ``..._TOKEN_FILE``, a file
    holding it), ``TILESTREAM_DICOMWEB_USER`` with ``..._PASSWORD`` (or
    ``..._PASSWORD_FILE``).

    Examples
    --------
    >>> DicomWebAuth(token="s3cret")
    DicomWebAuth(token=***)
    >>> DicomWebAuth.from_env({"TILESTREAM_DICOMWEB_USER": "ann", "TILESTREAM_DICOMWEB_PASSWORD": "pw"})
    DicomWebAuth(username='ann', password=***)
    """

    token: str | None = None
    username: str | None = None
    password: str | None = None

    def __post_init__(self) -> None:
        if self.token is not None and self.username is not None:
            raise ConfigError("give a DICOMweb bearer token or a user name, not both")
        if (self.username is None) != (self.password is None):
            raise ConfigError("DICOMweb basic auth needs both a user name and a password")

    def __repr__(self) -> str:
        if self.token is not None:
            return "DicomWebAuth(token=***)"
        if self.username is not None:
            return f"DicomWebAuth(username={self.username!r}, password=***)"
        return "DicomWebAuth()"

    @property
    def empty(self) -> bool:
        """No credentials at all."""
        return self.token is None and self.username is None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> DicomWebAuth:
        """Credentials from the environment (empty when none are set).

        Raises
        ------
        ConfigError
            A ``*_FILE`` variable names a file that cannot be read, or the
            variables are inconsistent (a token and a user; a user without a password).
        """
        env = os.environ if environ is None else environ
        token = env.get(ENV_TOKEN) or _read_secret(env, ENV_TOKEN_FILE)
        user = env.get(ENV_USER) or None
        password = env.get(ENV_PASSWORD) or _read_secret(env, ENV_PASSWORD_FILE)
        if user is None and password is not None:
            raise ConfigError(f"{ENV_PASSWORD} is set but {ENV_USER} is not")
        return cls(token=token, username=user, password=password)


def _read_secret(env: Mapping[str, str], name: str) -> str | None:
    path = env.get(name)
    if not path:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read the file named by {name} ({path}): {exc.strerror or type(exc).__name__}"
        ) from None
    value = text.strip()
    if not value:
        raise ConfigError(f"the file named by {name} ({path}) is empty")
    return value
