"""TF Object Detection API label maps (``label_map.pbtxt``): read, build and write.

A label map is a protobuf text file of ``item`` messages, each with an ``id``
(1-based; 0 is reserved for the background), a ``name`` and optionally a
``display_name``, ``keypoints`` and other fields. Files in the wild use every
spelling protobuf's text format allows: ``item {`` and ``item: {``, single or
double quotes, comments, ids with gaps, nested messages, no trailing newline.
This module parses all of them with a small text-format reader (no protobuf
schema needed) and keeps fields it does not model, so a map read and written
again loses nothing.

Examples
--------
>>> lm = parse_label_map("item: { id: 3 name: 'cat' } item { name: \\"dog\\" id: 1 }")
>>> lm.id_of("cat"), lm.name_of(1)
(3, 'dog')
>>> print(LabelMap.from_names(["b", "a", "b"]).to_text(), end="")
item {
  id: 1
  name: "a"
}
item {
  id: 2
  name: "b"
}
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Union

from tilestream._util.atomic import atomic_write
from tilestream.detection._parse import read_utf8
from tilestream.errors import AnnotationError

__all__ = [
    "Keypoint",
    "LabelMap",
    "LabelMapItem",
    "parse_label_map",
    "read_label_map",
    "write_label_map",
]

# A parsed text-format message: an ordered list of (field name, value).
TextValue = Union[str, int, float, "TextMessage", "Identifier"]
TextMessage = list[tuple[str, TextValue]]


class Identifier(str):
    """A bare identifier value in text format (an enum or ``true``/``false``)."""

    __slots__ = ()


@dataclass(frozen=True)
class Keypoint:
    """One keypoint of a label-map item (``keypoints { id: 0 label: "nose" }``)."""

    id: int
    label: str


@dataclass(frozen=True)
class LabelMapItem:
    """One ``item`` of a label map.

    Parameters
    ----------
    id
        The class id (1-based; 0 only for an explicit ``background`` item).
    name
        The class name, matched against annotation class names.
    display_name
        A human-readable name, when the file has one.
    keypoints
        Nested ``keypoints`` messages, in file order.
    extra
        Any other fields of the item, kept verbatim for writing back.
    """

    id: int
    name: str
    display_name: str | None = None
    keypoints: tuple[Keypoint, ...] = ()
    extra: tuple[tuple[str, TextValue], ...] = field(default=(), compare=False)


class LabelMap:
    """An ordered, validated set of label-map items.

    Parameters
    ----------
    items
        The items; ids must be unique and >= 1 (an item with id 0 is allowed
        only when it is named ``background``, as in older TensorFlow maps).
        Names must be unique.
    path
        The file the map came from, used in error messages.

    Examples
    --------
    >>> lm = LabelMap([LabelMapItem(1, "cat"), LabelMapItem(5, "dog", display_name="Dog")])
    >>> len(lm), lm.id_of("Dog"), "cat" in lm, lm.max_id
    (2, 5, True, 5)
    >>> lm.with_names(["eel"]).id_of("eel")
    6
    """

    def __init__(
        self, items: Iterable[LabelMapItem], *, path: str | os.PathLike[str] | None = None
    ) -> None:
        self.items: tuple[LabelMapItem, ...] = tuple(items)
        self.path = os.fspath(path) if path is not None else None
        self._by_id: dict[int, LabelMapItem] = {}
        self._by_name: dict[str, int] = {}
        display: dict[str, int] = {}
        for item in self.items:
            if item.id < 0 or (item.id == 0 and "background" not in (item.name, item.display_name)):
                raise AnnotationError(
                    f"label map item {item.name!r} has id {item.id}; ids start at 1 "
                    "(0 is reserved for the background)",
                    path=path,
                )
            if item.id in self._by_id:
                raise AnnotationError(
                    f"label map id {item.id} is used twice ({self._by_id[item.id].name!r} and "
                    f"{item.name!r})",
                    path=path,
                )
            if item.name in self._by_name:
                raise AnnotationError(f"label map name {item.name!r} is used twice", path=path)
            self._by_id[item.id] = item
            if item.id == 0:
                continue
            self._by_name[item.name] = item.id
            if item.display_name is not None:
                display.setdefault(item.display_name, item.id)
        # display names resolve only where they do not shadow a name
        self._by_display = {k: v for k, v in display.items() if k not in self._by_name}

    @classmethod
    def from_names(cls, names: Iterable[str]) -> LabelMap:
        """Build a map of the distinct ``names``, sorted, with ids 1..n."""
        return cls(LabelMapItem(i, n) for i, n in enumerate(sorted(set(names)), start=1))

    def with_names(self, names: Iterable[str]) -> LabelMap:
        """A copy with the names not yet present appended (sorted), ids from ``max_id + 1``."""
        new = sorted({n for n in names if n not in self})
        start = self.max_id + 1
        added = [LabelMapItem(start + i, n) for i, n in enumerate(new)]
        return LabelMap([*self.items, *added], path=self.path)

    @property
    def max_id(self) -> int:
        """The largest id (0 for an empty map)."""
        return max(self._by_id, default=0)

    def __len__(self) -> int:
        return sum(1 for item in self.items if item.id != 0)

    def __iter__(self) -> Iterator[LabelMapItem]:
        return (item for item in self.items if item.id != 0)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name or name in self._by_display

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelMap) and self.items == other.items

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = ", ".join(f"{i.id}: {i.name!r}" for i in list(self)[:6])
        more = ", ..." if len(self) > 6 else ""
        return f"LabelMap({{{shown}{more}}})"

    def get(self, name: str) -> int | None:
        """The id of ``name`` (or of a unique ``display_name``), or ``None``."""
        found = self._by_name.get(name)
        return found if found is not None else self._by_display.get(name)

    def id_of(self, name: str) -> int:
        """The id of ``name``; :class:`~tilestream.errors.AnnotationError` when absent."""
        found = self.get(name)
        if found is None:
            raise AnnotationError(f"class {name!r} is not in the label map", path=self.path)
        return found

    def name_of(self, id: int) -> str:
        """The name of the item with ``id``."""
        try:
            return self._by_id[id].name
        except KeyError:
            raise AnnotationError(f"id {id} is not in the label map", path=self.path) from None

    def to_dict(self) -> dict[str, int]:
        """``{name: id}`` for every item (background excluded)."""
        return {item.name: item.id for item in self}

    def to_text(self) -> str:
        """The map in protobuf text format (``item { ... }`` blocks, newline-terminated)."""
        out: list[str] = []
        for item in self.items:
            out.append("item {")
            out.append(f"  id: {item.id}")
            out.append(f"  name: {_quote(item.name)}")
            if item.display_name is not None:
                out.append(f"  display_name: {_quote(item.display_name)}")
            for kp in item.keypoints:
                out.append("  keypoints {")
                out.append(f"    id: {kp.id}")
                out.append(f"    label: {_quote(kp.label)}")
                out.append("  }")
            for name, value in item.extra:
                out.extend(_format_field(name, value, "  "))
            out.append("}")
        return "\n".join(out) + ("\n" if out else "")


# --------------------------------------------------------------------------- text format


_TOKEN = re.compile(
    r"""
    (?P<ws>\s+|\#[^\n]*)
  | (?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<num>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)[fF]?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[{}<>\[\]:;,])
    """,
    re.VERBOSE,
)

_ESCAPES = {
    "n": "\n",
    "t": "\t",
    "r": "\r",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "v": "\v",
    "\\": "\\",
    "'": "'",
    '"': '"',
    "?": "?",
}


def _unescape(body: str) -> str:
    out = bytearray()
    i = 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out += ch.encode("utf-8")
            i += 1
            continue
        nxt = body[i + 1]
        if nxt in _ESCAPES:
            out += _ESCAPES[nxt].encode()
            i += 2
        elif nxt in "01234567":
            m = re.match(r"[0-7]{1,3}", body[i + 1 :])
            assert m is not None
            out.append(int(m.group(), 8) & 0xFF)
            i += 1 + len(m.group())
        elif nxt in "xX":
            m = re.match(r"[0-9a-fA-F]{1,2}", body[i + 2 :])
            if m is None:
                raise ValueError("bad \\x escape")
            out.append(int(m.group(), 16))
            i += 2 + len(m.group())
        else:
            raise ValueError(f"unknown escape \\{nxt}")
    return out.decode("utf-8")


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


class _Parser:
    def __init__(self, text: str, path: str | None) -> None:
        self.path = path
        self.tokens: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None:
                self.fail(f"unexpected character {text[pos]!r}", pos, text)
            assert m is not None
            kind = m.lastgroup or ""
            if kind != "ws":
                self.tokens.append((kind, m.group(), self._line(text, pos)))
            pos = m.end()
        self.i = 0
        self.text = text

    @staticmethod
    def _line(text: str, pos: int) -> int:
        return text.count("\n", 0, pos) + 1

    def fail(self, message: str, pos: int | None = None, text: str | None = None) -> None:
        if pos is not None and text is not None:
            line = self._line(text, pos)
        elif self.i < len(self.tokens):
            line = self.tokens[self.i][2]
        else:
            line = self.tokens[-1][2] if self.tokens else 1
        raise AnnotationError(f"invalid label map, line {line}: {message}", path=self.path)

    def peek(self) -> tuple[str, str] | None:
        if self.i < len(self.tokens):
            kind, tok, _ = self.tokens[self.i]
            return kind, tok
        return None

    def take(self) -> tuple[str, str]:
        tok = self.peek()
        if tok is None:
            self.fail("unexpected end of file")
        assert tok is not None
        self.i += 1
        return tok

    def message(self, close: str | None) -> TextMessage:
        fields: TextMessage = []
        while True:
            tok = self.peek()
            if tok is None:
                if close is not None:
                    self.fail(f"missing {close!r} at end of file")
                return fields
            kind, text = tok
            if close is not None and kind == "punct" and text == close:
                self.i += 1
                return fields
            if kind != "ident":
                self.fail(f"expected a field name, found {text!r}")
            self.i += 1
            fields.extend((text, v) for v in self.field_values())
            nxt = self.peek()
            if nxt is not None and nxt[0] == "punct" and nxt[1] in ";,":
                self.i += 1

    def field_values(self) -> list[TextValue]:
        kind, text = self.take()
        colon = kind == "punct" and text == ":"
        if colon:
            kind, text = self.take()
        if kind == "punct" and text in "{<":
            return [self.message("}" if text == "{" else ">")]
        if not colon:
            self.fail(f"expected ':' or '{{' after a field name, found {text!r}")
        if kind == "punct" and text == "[":
            values: list[TextValue] = []
            while True:
                kind, text = self.take()
                if kind == "punct" and text == "]":
                    return values
                if kind == "punct" and text == ",":
                    continue
                if kind == "punct" and text in "{<":
                    values.append(self.message("}" if text == "{" else ">"))
                else:
                    values.append(self.scalar(kind, text))
        return [self.scalar(kind, text)]

    def scalar(self, kind: str, text: str) -> TextValue:
        if kind == "str":
            parts = [text]
            while (nxt := self.peek()) is not None and nxt[0] == "str":
                parts.append(nxt[1])
                self.i += 1
            try:
                return "".join(_unescape(p[1:-1]) for p in parts)
            except (ValueError, UnicodeDecodeError, IndexError) as exc:
                self.fail(f"bad string {text}: {exc}")
        if kind == "num":
            body = text.rstrip("fF") if not text.lower().startswith(("0x", "-0x", "+0x")) else text
            try:
                if re.fullmatch(r"[-+]?\d+", body):
                    return int(body)
                if re.fullmatch(r"[-+]?0[xX][0-9a-fA-F]+", body):
                    return int(body, 16)
                return float(body)
            except ValueError:
                self.fail(f"bad number {text!r}")
        if kind == "ident":
            return Identifier(text)
        self.fail(f"expected a value, found {text!r}")
        raise AssertionError  # unreachable


def _format_field(name: str, value: TextValue, indent: str) -> list[str]:
    if isinstance(value, list):
        lines = [f"{indent}{name} {{"]
        for sub_name, sub_value in value:
            lines.extend(_format_field(sub_name, sub_value, indent + "  "))
        lines.append(f"{indent}}}")
        return lines
    if isinstance(value, Identifier):
        return [f"{indent}{name}: {value}"]
    if isinstance(value, str):
        return [f"{indent}{name}: {_quote(value)}"]
    return [f"{indent}{name}: {value!r}"]


def _item_from_message(msg: TextMessage, parser: _Parser, number: int) -> LabelMapItem:
    where = f"item {number + 1}"
    ids: list[int] = []
    names: list[str] = []
    display: list[str] = []
    keypoints: list[Keypoint] = []
    extra: list[tuple[str, TextValue]] = []
    for name, value in msg:
        if name == "id":
            if not isinstance(value, int) or isinstance(value, bool):
                parser.fail(f"{where}: id must be an integer, not {value!r}")
            ids.append(int(value))  # type: ignore[arg-type]
        elif name == "name":
            if not isinstance(value, str) or isinstance(value, Identifier):
                parser.fail(f"{where}: name must be a quoted string, not {value!r}")
            names.append(str(value))
        elif name == "display_name":
            if not isinstance(value, str) or isinstance(value, Identifier):
                parser.fail(f"{where}: display_name must be a quoted string, not {value!r}")
            display.append(str(value))
        elif name == "keypoints" and isinstance(value, list):
            kp_id = next((v for k, v in value if k == "id" and isinstance(v, int)), None)
            label = next((v for k, v in value if k == "label" and isinstance(v, str)), "")
            if kp_id is None:
                parser.fail(f"{where}: a keypoints entry has no integer id")
            keypoints.append(Keypoint(int(kp_id), str(label)))  # type: ignore[arg-type]
        else:
            extra.append((name, value))
    if len(ids) != 1:
        parser.fail(f"{where} has {len(ids)} 'id' fields (needs exactly one)")
    if len(names) > 1 or len(display) > 1:
        parser.fail(f"{where} repeats 'name' or 'display_name'")
    if not names and not display:
        parser.fail(f"{where} (id {ids[0]}) has neither a name nor a display_name")
    # The OD API falls back to display_name when an item has no name.
    item_name = names[0] if names else display[0]
    return LabelMapItem(
        id=ids[0],
        name=item_name,
        display_name=display[0] if display else None,
        keypoints=tuple(keypoints),
        extra=tuple(extra),
    )


def parse_label_map(text: str, *, path: str | os.PathLike[str] | None = None) -> LabelMap:
    """Parse label-map text (any text-format spelling) into a :class:`LabelMap`.

    Parameters
    ----------
    text
        The file's content.
    path
        Where it came from, for error messages.

    Raises
    ------
    AnnotationError
        On a syntax error (with the line), a top-level field other than
        ``item``, a missing or repeated id, or duplicate ids or names.

    Examples
    --------
    >>> parse_label_map("# classes\\nitem { id: 2 name: 'a' display_name: \\"A\\" }").items[0]
    LabelMapItem(id=2, name='a', display_name='A', keypoints=(), extra=())
    """
    spath = os.fspath(path) if path is not None else None
    parser = _Parser(text, spath)
    top = parser.message(None)
    items: list[LabelMapItem] = []
    for name, value in top:
        if name != "item" or not isinstance(value, list):
            raise AnnotationError(
                f"invalid label map: unexpected top-level field {name!r} (expected 'item')",
                path=spath,
            )
        items.append(_item_from_message(value, parser, len(items)))
    return LabelMap(items, path=spath)


def read_label_map(path: str | os.PathLike[str]) -> LabelMap:
    """Read a ``label_map.pbtxt`` file.

    Raises
    ------
    AnnotationError
        When the file is missing, not UTF-8 or not a valid label map.
    """
    text = read_utf8(path, missing="label map file not found", unreadable="cannot read label map")
    return parse_label_map(text, path=path)


def write_label_map(label_map: LabelMap, path: str | os.PathLike[str]) -> None:
    """Write ``label_map`` to ``path`` atomically, in the form TensorFlow writes."""
    with atomic_write(path, "w") as f:
        f.write(label_map.to_text())
