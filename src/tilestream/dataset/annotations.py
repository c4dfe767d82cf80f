"""Annotations: one row per slide, read from a CSV file or a list of dicts (no pandas).

Every error names the file and the line (or the row number of a dict list):
a byte that is not valid in the file's encoding, a missing column, an empty
or duplicated slide name, a row with too many fields.

Examples
--------
>>> ann = load_annotations([{"slide": "s1", "patient": "p1", "label": "a"},
...                         {"slide": "s2", "patient": "p1", "label": "b"}])
>>> ann.slides(), ann.columns
(['s1', 's2'], ['slide', 'patient', 'label'])
>>> ann.by_slide()["s2"]["label"]
'b'
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tilestream._util.atomic import atomic_write
from tilestream.errors import AnnotationError

__all__ = ["Annotations", "load_annotations", "write_csv"]

AnnotationSource = str | os.PathLike[str] | Sequence[Mapping[str, Any]]


@dataclass
class Annotations:
    """Rows of an annotations table, every value a ``str``.

    Attributes
    ----------
    rows : list of dict
        One dict per slide, in file order.
    columns : list of str
        Column names, in file order.
    path : pathlib.Path or None
        The CSV file, when read from one.
    lines : list of int
        Where each row came from: the line in the file, or the 1-based position in a dict list.
    slide_column : str
    """

    rows: list[dict[str, str]]
    columns: list[str]
    path: Path | None = None
    lines: list[int] = field(default_factory=list)
    slide_column: str | None = "slide"

    def where(self, i: int) -> str:
        """``"<file>: line N"`` (or ``"annotations row N"`` of a dict list) for row ``i``."""
        if self.path is not None:
            return f"{self.path}: {self.line(i)}"
        return f"annotations {self.line(i)}"

    def line(self, i: int) -> str:
        """``"line N"`` (or ``"row N"`` of a dict list) for row ``i``."""
        return f"{'line' if self.path is not None else 'row'} {self.lines[i]}"

    def _slide_col(self) -> str:
        if self.slide_column is None:
            raise AnnotationError("these annotations were read without a slide column")
        return self.slide_column

    def slides(self) -> list[str]:
        """Slide names, in row order."""
        col = self._slide_col()
        return [r[col] for r in self.rows]

    def by_slide(self) -> dict[str, dict[str, str]]:
        """Rows keyed by slide name."""
        col = self._slide_col()
        return {r[col]: r for r in self.rows}

    def column(self, name: str) -> dict[str, str]:
        """``{slide: value}`` of one column.

        Raises
        ------
        AnnotationError
            No such column.
        """
        self.require(name)
        col = self._slide_col()
        return {r[col]: r[name] for r in self.rows}

    def require(self, *names: str) -> None:
        """Raise :class:`~tilestream.errors.AnnotationError` unless every column exists."""
        missing = [n for n in names if n not in self.columns]
        if missing:
            where = str(self.path) if self.path is not None else "annotations"
            raise AnnotationError(
                f"{where}: missing column{'s' if len(missing) > 1 else ''} "
                f"{', '.join(repr(m) for m in missing)} (columns: {self.columns})"
            )


def _decode(data: bytes, path: Path, encoding: str) -> str:
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        bad = data[exc.start : exc.start + 1].hex()
        raise AnnotationError(
            f"line {line}: byte 0x{bad} is not valid {encoding} (mixed encodings?); "
            "save the file as UTF-8, or pass the file's encoding (e.g. encoding='latin-1')",
            path=path,
        ) from None
    except LookupError:
        raise AnnotationError(f"unknown encoding {encoding!r}", path=path) from None
    return text.removeprefix("\ufeff")


def _read_csv(path: Path, encoding: str) -> tuple[list[dict[str, str]], list[str], list[int]]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise AnnotationError("annotations file does not exist", path=path) from None
    except OSError as exc:
        raise AnnotationError(f"cannot read annotations: {exc.strerror or exc}", path=path) from exc
    text = _decode(data, path, encoding)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            raise AnnotationError("annotations file is empty (no header line)", path=path)
        columns = [h.strip() for h in header]
        dupes = sorted({c for c in columns if columns.count(c) > 1 and c})
        if dupes:
            raise AnnotationError(f"line 1: repeated column names {dupes}", path=path)
        rows: list[dict[str, str]] = []
        lines: list[int] = []
        start = reader.line_num + 1
        for values in reader:
            line = start
            start = reader.line_num + 1
            if not any(v.strip() for v in values):
                continue  # a blank line
            if len(values) > len(columns):
                raise AnnotationError(
                    f"line {line}: {len(values)} fields, the header has {len(columns)}",
                    path=path,
                )
            values = values + [""] * (len(columns) - len(values))
            rows.append({c: v.strip() for c, v in zip(columns, values, strict=True)})
            lines.append(line)
    except csv.Error as exc:
        raise AnnotationError(f"line {reader.line_num}: malformed CSV ({exc})", path=path) from exc
    return rows, columns, lines


def _from_dicts(
    items: Iterable[Mapping[str, Any]],
) -> tuple[list[dict[str, str]], list[str], list[int]]:
    rows: list[dict[str, str]] = []
    columns: list[str] = []
    lines: list[int] = []
    for i, item in enumerate(items, start=1):
        if not isinstance(item, Mapping):
            raise AnnotationError(
                f"annotations row {i}: expected a dict, got {type(item).__name__}"
            )
        row: dict[str, str] = {}
        for k, v in item.items():
            key = str(k)
            if key not in columns:
                columns.append(key)
            row[key] = "" if v is None else str(v).strip()
        rows.append(row)
        lines.append(i)
    for row in rows:
        for c in columns:
            row.setdefault(c, "")
    return rows, columns, lines


def load_annotations(
    source: AnnotationSource | Annotations,
    *,
    slide_column: str | None = "slide",
    required: Sequence[str] = (),
    encoding: str = "utf-8",
) -> Annotations:
    """Read annotations and check them.

    Parameters
    ----------
    source
        A CSV file, a list of dicts, or :class:`Annotations` (returned as is after the checks).
    slide_column
        The column of slide names (required; each name once, none empty);
        ``None`` for a table without one (e.g. one row per patient).
    required
        Other columns that must exist.
    encoding
        The CSV's encoding (a leading BOM is ignored).

    Raises
    ------
    AnnotationError
        Unreadable or empty file, invalid bytes, missing columns, an empty or
        repeated slide name, a row with more fields than the header.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.csv"
    >>> _ = p.write_bytes(b"slide,label\\ns1,caf\\xe9\\n")
    >>> load_annotations(p)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    tilestream.errors.AnnotationError: ...a.csv: line 2: byte 0xe9 is not valid utf-8 ...
    >>> load_annotations(p, encoding="latin-1").rows
    [{'slide': 's1', 'label': 'café'}]
    """
    if isinstance(source, Annotations):
        ann = source
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        rows, columns, lines = _read_csv(path, encoding)
        ann = Annotations(rows, columns, path, lines, slide_column)
    else:
        rows, columns, lines = _from_dicts(source)
        ann = Annotations(rows, columns, None, lines, slide_column)
    ann.slide_column = slide_column
    if slide_column is None:
        ann.require(*required)
        return ann
    ann.require(slide_column, *required)
    seen: dict[str, int] = {}
    for i, row in enumerate(ann.rows):
        name = row[slide_column]
        if not name:
            raise AnnotationError(f"{ann.where(i)}: empty {slide_column!r}")
        if name in seen:
            raise AnnotationError(
                f"{ann.where(i)}: duplicate slide name {name!r} (first at {ann.line(seen[name])})"
            )
        seen[name] = i
    return ann


def write_csv(
    path: str | os.PathLike[str],
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str] | None = None,
) -> Path:
    """Write rows to a UTF-8 CSV file atomically (columns: given, else in first-seen order).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "out.csv"
    >>> _ = write_csv(p, [{"slide": "s1", "CV3": "2"}])
    >>> p.read_text().splitlines()
    ['slide,CV3', 's1,2']
    """
    if columns is None:
        cols: list[str] = []
        for row in rows:
            cols.extend(k for k in row if k not in cols)
        columns = cols
    out = Path(path)
    with atomic_write(out, "w", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in columns})
    return out
