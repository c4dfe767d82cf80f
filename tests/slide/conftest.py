"""The local slide suites again with the slide file in SeaweedFS: the ``slide_at`` fixture.

A test that takes ``slide_at`` runs once per ``storage`` kind (``local``, ``s3``,
``http``; choose with ``@pytest.mark.parametrize("storage", storage_kinds(...),
indirect=True)``). It names its slide by the local path as before and opens it
with :meth:`SlideAt.open` (or gets what to open with :meth:`SlideAt.name`): locally
the path itself, else the file's URL in the module's bucket (uploaded once per
content digest, a DICOM file with the rest of its series), with the kind's
``storage_options``. References (OpenSlide, tifffile, Pillow on the local file)
stay local, so a remote read must give the local pixels and metadata exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from _remote import Remote
from tilestream.slide import Slide, open_slide
from tilestream.storage import is_url

__all__ = ["SlideAt"]


@dataclass
class SlideAt:
    """Where a test reads its slide files from (a :class:`Remote` of one kind)."""

    storage: Remote
    names: dict[tuple[Path, int, int], str] = field(default_factory=dict)

    @property
    def local(self) -> bool:
        return self.storage.local

    @property
    def kind(self) -> str:
        return self.storage.kind

    def name(self, path: str | Path) -> str:
        """What to open for the local ``path``: the path, or the URL of its copy."""
        if self.local or is_url(str(path)):  # a local path, or a URL it gave already
            return str(path)
        path = Path(path)
        st = path.stat()
        memo = (path.resolve(), st.st_size, st.st_mtime_ns)
        if memo not in self.names:
            if path.suffix == ".dcm":  # the series travels together, under one prefix
                files = sorted(path.parent.glob("*.dcm"))
                urls = self.storage.put(files, with_indexes=False)
                self.names[memo] = urls[files.index(path)]
            else:
                self.names[memo] = self.storage.put_one(path, with_index=False)
        return self.names[memo]

    def open(self, path: str | Path, **kwargs: Any) -> Slide:
        """:func:`~tilestream.slide.open_slide` of ``path``'s copy, with ``kwargs``."""
        return open_slide(self.name(path), **self.storage.kw, **kwargs)


@pytest.fixture
def slide_at(storage: Remote) -> SlideAt:
    """Slides opened from the ``storage`` kind of the test (see the module docstring)."""
    return SlideAt(storage)
