"""The HTTP session of a DICOMweb server: credentials, timeouts, retries, errors named for the URL.

:class:`DicomWebSession` wraps a ``requests`` session: bearer or basic auth
(from :class:`~tilestream.slide.dicomweb.DicomWebOptions`, the environment or
the URL's userinfo, in that order), a timeout on every request, and retries
with exponential backoff on connection errors, 429 and 5xx answers (bounded
by :attr:`DicomWebOptions.retries`). :func:`map_http_error` turns what
``requests`` (or ``dicomweb-client`` underneath wsidicom) raised into a
:class:`~tilestream.errors.SlideError` naming the slide's URL, never its
credentials or query string: exception texts of ``requests`` (which quote
full URLs) are never copied into messages.
"""

from __future__ import annotations

import contextvars
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tilestream._util.optional import require
from tilestream.errors import (
    RemoteSlideError,
    SlideAccessDeniedError,
    SlideError,
    SlideNotFoundError,
)
from tilestream.slide.dicomweb._url import DicomWebAuth, DicomWebURL

if TYPE_CHECKING:
    import requests

__all__ = ["OPTIONS", "DicomWebOptions", "DicomWebSession", "map_http_error"]

logger = logging.getLogger(__name__)

#: HTTP answers retried with backoff.
RETRY_STATUS = (429, 500, 502, 503, 504)


@dataclass(frozen=True)
class DicomWebOptions:
    """How a DICOMweb slide is read: credentials, timeouts, retries, batching.

    Parameters
    ----------
    auth
        Credentials; ``None``: from the environment (:meth:`DicomWebAuth.from_env`),
        else the URL's userinfo, else none.
    timeout
        Seconds to wait for a connection and for each read of an answer.
    retries
        Retries of a request on a connection error, 429 or 5xx (0: none).
    backoff
        Backoff factor in seconds: waits ``backoff * 2**(n-1)`` before retry ``n``
        (at most 10 s each), or what a ``Retry-After`` header says.
    frames_per_request
        At most this many frames in one multi-frame WADO-RS request.
    concurrency
        At most this many frame requests in flight at once per slide.
    frame_cache_bytes
        Budget of the encoded-frame cache per slide.

    Examples
    --------
    >>> DicomWebOptions(auth=DicomWebAuth(token="t")).auth
    DicomWebAuth(token=***)
    """

    auth: DicomWebAuth | None = None
    timeout: float = 60.0
    retries: int = 4
    backoff: float = 0.25
    frames_per_request: int = 64
    concurrency: int = 4
    frame_cache_bytes: int = 128 * 1024 * 1024
    user_agent: str = field(default="tilestream-dicomweb", repr=False)

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.retries < 0 or self.backoff < 0:
            raise ValueError("timeout must be positive, retries and backoff non-negative")
        if self.frames_per_request < 1 or self.concurrency < 1:
            raise ValueError("frames_per_request and concurrency must be at least 1")


#: Options of the slide being opened (set by :mod:`tilestream.slide.opening` around the backend).
OPTIONS: contextvars.ContextVar[DicomWebOptions | None] = contextvars.ContextVar(
    "tilestream_dicomweb_options", default=None
)


def _credentials(url: DicomWebURL, options: DicomWebOptions) -> DicomWebAuth:
    if options.auth is not None:
        return options.auth
    env = DicomWebAuth.from_env()
    if not env.empty:
        return env
    if url.username is not None:
        return DicomWebAuth(username=url.username, password=url.password or "")
    return DicomWebAuth()


def _adapter_class(base: type) -> type:
    """``requests``' adapter giving every request a timeout (wsidicom's calls pass none)."""

    class TimeoutAdapter(base):  # type: ignore[misc]
        def __init__(self, timeout: float, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.default_timeout = timeout

        def send(self, request: Any, **kwargs: Any) -> Any:
            if kwargs.get("timeout") is None:
                kwargs["timeout"] = self.default_timeout
            return super().send(request, **kwargs)

    return TimeoutAdapter


class DicomWebSession:
    """One ``requests`` session to a DICOMweb server, with auth, retries and timeouts.

    Parameters
    ----------
    url
        Any URL on the server (its :attr:`~DicomWebURL.base_url` is the root).
    options
        Credentials, timeout, retries (``None``: :class:`DicomWebOptions` defaults).

    Raises
    ------
    MissingDependencyError
        The ``dicomweb`` extra (``requests``) is not installed.
    """

    def __init__(self, url: DicomWebURL, options: DicomWebOptions | None = None) -> None:
        requests = require("requests", extra="dicomweb", purpose="reading DICOMweb slides")
        adapters = require("requests.adapters", extra="dicomweb")
        retry_mod = require("urllib3.util.retry", extra="dicomweb")
        self.url = url
        self.options = options or DicomWebOptions()
        retry = retry_mod.Retry(
            total=self.options.retries,
            connect=self.options.retries,
            read=self.options.retries,
            status=self.options.retries,
            backoff_factor=self.options.backoff,
            backoff_max=10.0,
            status_forcelist=RETRY_STATUS,
            allowed_methods=frozenset({"GET", "HEAD"}),
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        session = requests.Session()
        adapter = _adapter_class(adapters.HTTPAdapter)(
            self.options.timeout,
            max_retries=retry,
            pool_maxsize=max(10, 2 * self.options.concurrency),
        )
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers["User-Agent"] = self.options.user_agent
        session.trust_env = False  # no .netrc credentials sent to a server we did not choose
        auth = _credentials(url, self.options)
        if auth.token is not None:
            session.headers["Authorization"] = f"Bearer {auth.token}"
        elif auth.username is not None:
            session.auth = (auth.username, auth.password or "")
        self.session = session

    def __repr__(self) -> str:
        return f"DicomWebSession({self.url.base_url!r})"

    def get(self, path: str, *, accept: str, what: str, stream: bool = False) -> requests.Response:
        """``GET`` ``path`` under the DICOMweb root; errors become :class:`SlideError`.

        ``what`` names what was asked for in error messages ("the series' metadata"...).
        """
        target = path if path.startswith(("http://", "https://")) else self.url.base_url + path
        try:
            response = self.session.get(
                target, headers={"Accept": accept}, timeout=self.options.timeout, stream=stream
            )
        except Exception as exc:
            raise map_http_error(exc, self.url, what) from None
        if response.status_code >= 400:
            error = _status_error(response.status_code, self.url, what)
            response.close()
            raise error
        return response

    def get_json(self, path: str, *, what: str) -> Any:
        """``GET`` a QIDO-RS / metadata path as DICOM JSON (``[]`` for 204 No Content)."""
        response = self.get(path, accept="application/dicom+json, application/json", what=what)
        if response.status_code == 204 or not response.content:
            return []
        try:
            return response.json()
        except ValueError:
            raise RemoteSlideError(
                f"the server does not speak DICOMweb: {what} is not DICOM JSON "
                f"(Content-Type {response.headers.get('Content-Type', 'none')!r})",
                path=self.url.url,
            ) from None

    def close(self) -> None:
        """Close the connections."""
        self.session.close()


def _status_error(status: int, url: DicomWebURL, what: str) -> SlideError:
    where = url.url
    if status in (401, 403):
        return SlideAccessDeniedError(
            f"the server refused access to {what} (HTTP {status}); set credentials "
            "(TILESTREAM_DICOMWEB_TOKEN, TILESTREAM_DICOMWEB_USER/PASSWORD or DicomWebAuth)",
            path=where,
        )
    if status == 404:
        return SlideNotFoundError(f"the server has no {what} (HTTP 404)", path=where)
    if status in (400, 405, 406, 415, 501):
        return RemoteSlideError(
            f"the server does not answer {what} as a DICOMweb server would (HTTP {status})",
            path=where,
        )
    return RemoteSlideError(f"the server failed on {what} (HTTP {status})", path=where)


def map_http_error(exc: BaseException, url: DicomWebURL, what: str) -> SlideError:
    """The :class:`SlideError` for what ``requests`` raised while fetching ``what``.

    Only the exception's class and the HTTP status are used: ``requests``'
    messages quote the full request URL, query string included.
    """
    if isinstance(exc, SlideError):
        return exc
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(status, int) and status >= 400:
        return _status_error(status, url, what)
    names = _cause_names(exc)
    if any("Timeout" in n for n in names):
        cause = "Timeout: no answer in time"
    elif any("Connection" in n or "Retry" in n or "Protocol" in n for n in names):
        cause = "ConnectionError: cannot connect, or the connection broke"
    else:
        return RemoteSlideError(f"cannot get {what} from the server ({names[0]})", path=url.url)
    return RemoteSlideError(
        f"cannot get {what} from the server ({cause}; after retries)", path=url.url
    )


def _cause_names(exc: BaseException) -> list[str]:
    """Class names along an exception's causes (``requests`` wraps urllib3's in ``args``)."""
    names: list[str] = []
    node: BaseException | None = exc
    while node is not None and len(names) < 8:
        names.append(type(node).__name__)
        reason = getattr(node, "reason", None)
        if not isinstance(reason, BaseException) and node.args:
            reason = node.args[0]
        node = reason if isinstance(reason, BaseException) else node.__cause__ or node.__context__
    return names
