"""Atomic file writes: temp file in the same folder, fsync, rename.

A file written through :func:`atomic_path` or :func:`atomic_write` appears
under its final name only once it is complete; a crash leaves at most a
``.<name>.<random>.tmp`` file behind, never a partial file under the final
name.

Examples
--------
>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> with atomic_write(d / "a.txt", "w") as f:
...     _ = f.write("hello")
>>> (d / "a.txt").read_text()
'hello'
>>> import os, stat
>>> stat.S_IMODE(os.stat(d / "a.txt").st_mode) == 0o666 & ~_umask()
True
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_path",
    "atomic_write",
    "fsync_dir",
    "is_temp_file",
    "remove_temp_files",
    "write_json_atomic",
]

TEMP_SUFFIX = ".tmp"


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask() can only be read by setting it, which is not
# safe while other threads create files.
_UMASK = _read_umask()


def _umask() -> int:
    return _UMASK


def is_temp_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a temporary file left by an interrupted atomic write."""
    name = Path(path).name
    return name.startswith(".") and name.endswith(TEMP_SUFFIX)


def remove_temp_files(folder: str | os.PathLike[str], name: str) -> int:
    """Remove the temporary files interrupted atomic writes of ``folder/name`` left behind.

    ``name`` may be a glob (``"slide.*"``). Only files named the way
    :func:`atomic_path` names its temporary files are touched. Returns how many
    were removed.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / ".a.txt.x1y2.tmp").write_text("half"), (d / "a.txt").write_text("done")
    >>> remove_temp_files(d, "a.txt"), sorted(p.name for p in d.iterdir())
    (1, ['a.txt'])
    """
    removed = 0
    for tmp in Path(folder).glob(f".{name}.*{TEMP_SUFFIX}"):
        try:
            tmp.unlink()
            removed += 1
        except OSError:  # pragma: no cover - e.g. removed concurrently
            continue
    return removed


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Flush a directory entry to disk (so a rename survives a power cut)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` on success.

    The caller writes (and closes) the temporary file. On an exception the
    temporary file is removed and ``path`` is left untouched.
    """
    final = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=TEMP_SUFFIX, dir=final.parent)
    # mkstemp creates 0600; give the file the permissions open() would (0666 less umask)
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, final)
        fsync_dir(final.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike[str], mode: str = "wb", *, encoding: str | None = None
) -> Iterator[IO[Any]]:
    """Open a file for writing that appears at ``path`` only when complete."""
    if "w" not in mode:
        raise ValueError(f"atomic_write needs a write mode, not {mode!r}")
    if "b" not in mode and encoding is None:
        encoding = "utf-8"
    with atomic_path(path) as tmp, open(tmp, mode, encoding=encoding) as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def write_json_atomic(path: str | os.PathLike[str], data: Any, *, indent: int | None = 2) -> None:
    """Write ``data`` as JSON to ``path`` atomically."""
    with atomic_write(path, "w") as f:
        json.dump(data, f, indent=indent, sort_keys=False)
        f.write("\n")
