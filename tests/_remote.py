"""Copies of local test files in SeaweedFS, by S3 URL or by the filer's HTTP URL.

The remote TFRecord, loader and dataset tests run their local cases again on
these copies (``kind`` is ``"local"``, ``"s3"`` or ``"http"``).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tilestream.storage import store_for

KINDS = ("local", "s3", "http")


@dataclass
class Remote:
    """Where copies go: ``kind``, the bucket, and the options a reader needs."""

    kind: str
    seaweed: Any = None
    bucket: str = ""
    uploaded: list[str] = field(default_factory=list)

    @property
    def options(self) -> dict[str, Any] | None:
        return None if self.kind != "s3" else dict(self.seaweed.storage_options)

    def url(self, key: str) -> str:
        if self.kind == "s3":
            return f"s3://{self.bucket}/{key}"
        return f"{self.seaweed.filer_url}/buckets/{self.bucket}/{key}"

    def put(
        self, files: Sequence[str | Path], *, prefix: str = "run", with_indexes: bool = True
    ) -> list[str]:
        """Upload ``files`` (and their ``.index.npz`` beside them) under ``prefix``; their URLs."""
        if self.kind == "local":
            return [str(f) for f in files]
        store, _ = store_for(f"s3://{self.bucket}", self.seaweed.storage_options)
        urls = []
        for f in files:
            path = Path(f)
            store.write_atomic(f"{prefix}/{path.name}", path.read_bytes())
            index = path.with_name(path.name.rsplit(".", 1)[0] + ".index.npz")
            if with_indexes and index.exists():
                store.write_atomic(f"{prefix}/{index.name}", index.read_bytes())
            urls.append(self.url(f"{prefix}/{path.name}"))
        return urls

    def put_bytes(self, key: str, data: bytes) -> str:
        store, _ = store_for(f"s3://{self.bucket}", self.seaweed.storage_options)
        store.write_atomic(key, data)
        return self.url(key)


def make_remote(kind: str, request: Any, area: str) -> Remote:
    """A :class:`Remote` of ``kind``, with a fresh bucket named after ``area`` for S3 and HTTP."""
    if kind == "local":
        return Remote("local")
    seaweed = request.getfixturevalue("seaweed")
    bucket = f"{area}-{secrets.token_hex(3)}"
    seaweed.make_bucket(bucket)
    return Remote(kind, seaweed, bucket)
