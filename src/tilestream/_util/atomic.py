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
import re
import secrets
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_path",
    "atomic_write",
    "fsync_dir",
    "is_temp_file",
    "remove_temp_files",
    "temp_target",
    "write_json_atomic",
]

TEMP_SUFFIX = ".tmp"
#: Hex digits of the random token in a temporary file's name (``.<name>.<token>.tmp``).
TOKEN_HEX = 12
# The token of this version, and the one ``tempfile.mkstemp`` made in earlier versions.
# Both have a fixed length and no dot, so a temporary file's name tells exactly which
# final name it belongs to: ``.p1.slideA.<token>.tmp`` is never one of ``p1``'s.
_TEMP_RE = re.compile(
    rf"\.(?P<name>.+)\.(?:[0-9a-f]{{{TOKEN_HEX}}}|[a-z0-9_]{{8}}){re.escape(TEMP_SUFFIX)}", re.S
)


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask() can only be read by setting it, which is not
# safe while other threads create files.
_UMASK = _read_umask()


def _umask() -> int:
    return _UMASK


def temp_target(path: str | os.PathLike[str]) -> str | None:
    """The final file name a temporary file of an atomic write belongs to, else ``None``.

    >>> temp_target(".p1.slideA.tfrecords.0123456789ab.tmp"), temp_target("p1.tfrecords")
    ('p1.slideA.tfrecords', None)
    """
    m = _TEMP_RE.fullmatch(os.path.basename(os.fspath(path)))
    return m.group("name") if m else None


def is_temp_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a temporary file left by an interrupted atomic write."""
    return temp_target(path) is not None


def remove_temp_files(
    folder: str | os.PathLike[str], names: str | Collection[str] | Callable[[str], bool]
) -> int:
    """Remove the temporary files interrupted atomic writes of ``folder/<name>`` left behind.

    ``names`` is one final file name, a collection of them, or a predicate on
    final names; it is matched exactly (no glob), so the leftovers of
    ``p1.tfrecords`` are removed and those of ``p1.slideA.tfrecords`` or
    ``a[1].tfrecords`` are not. Only files named the way :func:`atomic_path`
    names its temporary files are touched. Returns how many were removed.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / ".a.txt.0123456789ab.tmp").write_text("half"), (d / "a.txt").write_text("done")
    >>> _ = (d / ".a.txt.x.0123456789ab.tmp").write_text("another file's")
    >>> remove_temp_files(d, "a.txt"), sorted(p.name for p in d.iterdir())
    (1, ['.a.txt.x.0123456789ab.tmp', 'a.txt'])
    """
    if isinstance(names, str):
        names = {names}
    wanted: Callable[[str], bool] = names if callable(names) else set(names).__contains__
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return 0
    removed = 0
    for entry in entries:
        target = temp_target(entry.name)
        if target is None or not wanted(target):
            continue
        try:
            os.unlink(entry.path)
            removed += 1
        except FileNotFoundError:  # pragma: no cover - removed concurrently
            continue
    return removed


def _create_temp(final: Path) -> Path:
    """Create an empty ``.<name>.<token>.tmp`` beside ``final`` (mode 0666 less umask)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = final.parent / f".{final.name}.{secrets.token_hex(TOKEN_HEX // 2)}{TEMP_SUFFIX}"
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"cannot create a temporary file beside {final}")  # pragma: no cover


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
    tmp_path = _create_temp(final)
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
    # json.dumps, not json.dump: only a one-shot encode uses the C encoder (same text)
    text = json.dumps(data, indent=indent, sort_keys=False)
    with atomic_write(path, "w") as f:
        f.write(text)
        f.write("\n")
