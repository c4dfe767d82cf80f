"""Who may use a viewer, and what of the server's disk it shows.

A viewer serves label and macro images (often patient identifiers), slide
properties and whole TFRecords. On loopback (the default) only this computer
reaches it and the ``Host`` header must be a loopback name (no DNS rebinding
from another web page). Off loopback it requires an **access token**: a random
``secrets.token_urlsafe(32)``, printed in the URL as ``?token=...`` (as Jupyter
does). The first request carrying it gets an ``HttpOnly``, ``SameSite=Strict``
cookie and a redirect to the same URL without it; later requests carry the
cookie (or an ``Authorization: token ...`` header). Tokens are compared in
constant time. Running off loopback without a token takes an explicit choice
(``token=False``, ``tilestream view --no-token``); the ``Host`` header must then
be an IP address or this machine's name.

What the browser is shown never holds an absolute path of the server's disk:
:func:`public_text` makes paths under the served folder relative to it and
strips the folders of any other absolute path.

Examples
--------
>>> access = Access.for_server("127.0.0.1", 8000, token=None)
>>> access.token is None, access.host_allowed("localhost:8000"), access.host_allowed("evil.example")
(True, True, False)
>>> remote = Access.for_server("0.0.0.0", 8000, token="s3cret-token-0123456789")
>>> remote.matches("s3cret-token-0123456789"), remote.matches("guess")
(True, False)
>>> public_text("/data/slides/a.svs: cannot open /data/run/x.tfrecords", root=Path("/data/run"))
'a.svs: cannot open x.tfrecords'
>>> redact_token("/api/slides?token=abc&id=1")
'/api/slides?token=[redacted]&id=1'
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import re
import secrets
import socket
from dataclasses import dataclass
from email.message import Message
from pathlib import Path

from tilestream.errors import ConfigError

__all__ = ["TOKEN_PARAM", "Access", "is_loopback", "new_token", "public_text", "redact_token"]

log = logging.getLogger(__name__)

#: The query parameter carrying the token in the printed URL.
TOKEN_PARAM = "token"

_LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})
_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9._~-]{16,256}")


def new_token() -> str:
    """A fresh random access token (URL- and cookie-safe)."""
    return secrets.token_urlsafe(32)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is this computer only."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


def _host_name(header: str) -> str:
    # "name:port", "[v6]:port", "[v6]" or "name" -> the name, lowercased
    host = header.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if ":" in host else host


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Access:
    """The access rules of one server.

    Attributes
    ----------
    token
        The token every request must carry, or ``None`` (no token asked).
    port
        The server's port (names the cookie: cookies do not tell ports apart).
    hosts
        ``Host`` names answered, or ``None`` for any (when a token is required).
    any_ip
        Whether any IP-address ``Host`` is answered too (off loopback without a token).
    """

    token: str | None
    port: int
    hosts: frozenset[str] | None
    any_ip: bool = False

    @classmethod
    def for_server(cls, host: str, port: int, *, token: str | bool | None) -> Access:
        """The rules of a server on ``host:port``.

        ``token``: ``None`` asks for a fresh one off loopback only, ``True`` always,
        ``False`` never (off loopback: logged as a warning), a string is that token.

        Raises
        ------
        ConfigError
            When a given token is shorter than 16 characters or not URL-safe.
        """
        loopback = is_loopback(host)
        if token is None:
            token = not loopback
        if token is True:
            value: str | None = new_token()
        elif token is False:
            value = None
        else:
            if not _TOKEN_SHAPE.fullmatch(token):
                raise ConfigError(
                    "an access token must be 16 to 256 URL-safe characters (A-Z a-z 0-9 . _ ~ -)"
                )
            value = token
        if loopback:
            return cls(value, port, _LOOPBACK_NAMES | {host.lower()})
        if value is not None:
            return cls(value, port, None)
        log.warning(
            "viewer on %s:%s WITHOUT an access token: anyone who can reach it sees every "
            "slide, label image and TFRecord it serves",
            host,
            port,
        )
        names = {"localhost", socket.gethostname().lower(), socket.getfqdn().lower()}
        return cls(None, port, frozenset(names), any_ip=True)

    @property
    def cookie_name(self) -> str:
        """Name of the cookie holding the token."""
        return f"tilestream-token-{self.port}"

    def host_allowed(self, header: str | None) -> bool:
        """Whether a request with this ``Host`` header is answered."""
        if self.hosts is None:
            return True
        name = _host_name(header or "")
        return name in self.hosts or (self.any_ip and _is_ip(name))

    def matches(self, candidate: str) -> bool:
        """Whether ``candidate`` is the token (constant-time comparison)."""
        if self.token is None:
            return False
        return hmac.compare_digest(candidate.encode("utf-8", "replace"), self.token.encode())

    def authorised(self, headers: Message) -> bool:
        """Whether a request carries the token in its cookie or ``Authorization`` header."""
        if self.token is None:
            return True
        auth = headers.get("Authorization") or ""
        scheme, _, value = auth.strip().partition(" ")
        if scheme.lower() == "token" and self.matches(value.strip()):
            return True
        for header in headers.get_all("Cookie") or []:
            for part in header.split(";"):
                name, _, value = part.strip().partition("=")
                if name == self.cookie_name and self.matches(value):
                    return True
        return False

    def cookie(self) -> str:
        """The ``Set-Cookie`` value giving a browser the token."""
        return f"{self.cookie_name}={self.token}; Path=/; HttpOnly; SameSite=Strict"


_TOKEN_IN_URL = re.compile(rf"({TOKEN_PARAM}=)[^&\s#]*")


def redact_token(text: str) -> str:
    """``text`` (a request line or URL) with any ``token=`` value replaced, for logs."""
    return _TOKEN_IN_URL.sub(r"\1[redacted]", text)


# The folders of an absolute POSIX or Windows path (not of a relative one or a URL).
_ABSOLUTE_DIRS = re.compile(r"(?<![\w.:/\\~-])(?:[A-Za-z]:)?[\\/](?:[^\\/\s'\"<>:]+[\\/])+")


def public_text(text: str, *, root: Path | None = None) -> str:
    """``text`` without the server's absolute paths: relative to ``root``, else file names.

    >>> public_text("cannot read /srv/data/run/state/a.json", root=Path("/srv/data"))
    'cannot read run/state/a.json'
    """
    if root is not None:
        prefix = str(root).rstrip(os.sep) + os.sep
        text = text.replace(prefix, "")
    return _ABSOLUTE_DIRS.sub("", text)
