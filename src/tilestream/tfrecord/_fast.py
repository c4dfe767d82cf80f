"""The tile strategy of the Example parser: :class:`TileParser`.

A tile record (``serialized_record``, or TensorFlow's ``tf.train.Example``
with the same features in any order) is one ``Features`` message whose map
entries are either *small* (under 128 bytes: ``slide``, ``loc_x``,
``loc_y``...) or one *large* single-value ``bytes_list`` (the image). The
generic parser walks every varint of every entry in Python; this path
instead

* looks small entries up, whole, in a cache of already decoded entries
  (a grid of tiles repeats the same ``slide`` and ``loc_x``/``loc_y``
  entries over and over; the key is the entry's complete bytes, so a hit
  means the generic parser would decode it to the same value),
* checks the head of a large entry (four nested lengths, the key, the tags)
  with one integer comparison against the head the encoder writes for that
  key, learned once per key and varint width.

Anything else (other shapes, truncated or malformed bytes, ``squeeze=False``)
makes :meth:`TileParser.parse` return ``None`` and the caller runs the generic
parser, which then gives the result or the precise error. A ``dict`` from
this path is always equal to the generic parser's result for the same
bytes (checked exhaustively on real files and by property-based tests).
On other data the attempt is kept cheap: a long numeric list is refused at
its tag, a record with more than a few entries not seen before is declined,
and after a run of declined records the path pauses for a while.

The generic parser owns a :class:`TileParser` and hands it the one thing it
needs from the generic side (how to decode a small entry it has not seen),
so this module imports nothing from the generic parser. The caches and the
pause live on the instance.

Examples
--------
>>> from tilestream.tfrecord._decode import small_entry
>>> from tilestream.tfrecord.example import serialized_record
>>> tiles = TileParser(small_entry)
>>> rec = serialized_record("s", bytes(200), 256, 512)
>>> out = tiles.parse(rec, 0, len(rec))
>>> out["slide"], out["loc_x"], out["loc_y"], len(out["image_raw"])
(b's', 256, 512, 200)
>>> tiles.parse(b"\\x0a\\x05", 0, 2) is None
True
"""

from __future__ import annotations

import mmap
from collections.abc import Callable
from typing import Any

from tilestream.tfrecord.wire import encode_varint as _varint

__all__ = ["EntryDecoder", "TileParser"]

_Buf = bytes | mmap.mmap

#: Decodes one complete small map entry: ``(name, value)``, or ``None`` unless it is one clean entry.
EntryDecoder = Callable[[bytes], "tuple[str, Any] | None"]

_SMALL_MAX = 4096
_LARGE_MAX = 256
#: Small entries not in the cache that one record may have (a tile's slide, loc_x, loc_y).
_MAX_MISSES = 3
#: Records in a row that are not tile-shaped before the fast path pauses, and for how many.
_BAD_RUN = 8
_SKIP = 1024
#: Longest key a large entry may have on the fast path (keeps every carry single).
_MAX_KEY = 64
# The head of a large entry with a key of ``kl`` bytes and value of ``m`` bytes,
# all four lengths varints of the same width ``w`` (2 or 3 bytes)::
#
#     0a V(m+kl+5+3w) | 0a kl key | 12 V(m+2+2w) | 0a V(m+1+w) | 0a V(m)
#
# Read as one little-endian integer X, with ``u`` the integer of the last w
# bytes (V(m)), each length's bytes are ``u + c`` (c its constant above) plus
# 0x80 when ``(m & 0x7F) + c`` carries out of the low 7 bits (the low byte
# keeps its continuation bit, the next byte counts one up), as long as that
# next byte does not itself overflow (its 7 bits are not all set). So
# ``X - u * mul - corr[m & 0x7F]`` is the same integer T for every m: the tags
# and the key. ``_layout(w, kl)`` gives ``(mul, corr)``.
# Indexed ``[w][kl]``; ``None`` until a head of that shape has been seen.
_LAYOUTS: tuple[list[tuple[int, tuple[int, ...]] | None], ...] = tuple(
    [None] * (_MAX_KEY + 1) for _ in range(4)
)


def _layout(w: int, kl: int) -> tuple[int, tuple[int, ...]]:
    lay = _LAYOUTS[w][kl]
    if lay is None:
        offsets = (1, 4 + kl + w, 5 + kl + 2 * w, 6 + kl + 3 * w)
        consts = (kl + 5 + 3 * w, 2 + 2 * w, 1 + w, 0)
        mul = sum(1 << (8 * o) for o in offsets)
        corr = tuple(
            sum(0x80 << (8 * o) for o, c in zip(offsets, consts, strict=True) if lo + c > 0x7F)
            for lo in range(128)
        )
        lay = _LAYOUTS[w][kl] = (mul, corr)
    return lay


def _large_entry(d: _Buf, q: int, w: int, learned: dict[int, str]) -> tuple[str, int, int] | None:
    """Check a large entry's head byte by byte: ``(name, head length, value length)`` or ``None``.

    On success, learns the head's constant part T into ``learned`` (for :meth:`TileParser.parse`).
    """
    kl = d[q + w + 2]
    if kl > _MAX_KEY or d[q + w + 1] != 0x0A:
        return None
    hl = 6 + kl + 4 * w
    head = d[q : q + hl]
    if len(head) != hl or head[w + 3 + kl] != 0x12 or head[2 * w + 4 + kl] != 0x0A:
        return None  # not a Feature holding a bytes_list (a long float or int64 list)
    key = head[w + 3 : w + 3 + kl]
    u = int.from_bytes(head[hl - w :], "little")
    m = (u & 0x7F) | ((u >> 1) & 0x3F80) | ((u >> 2) & 0x1FC000)
    expected = b"".join(
        (
            b"\x0a",
            _varint(m + kl + 5 + 3 * w),
            b"\x0a",
            bytes((kl,)),
            key,
            b"\x12",
            _varint(m + 2 + 2 * w),
            b"\x0a",
            _varint(m + 1 + w),
            b"\x0a",
            _varint(m),
        )
    )
    if head != expected or len(_varint(m)) != w or len(_varint(m + kl + 5 + 3 * w)) != w:
        return None
    try:
        name = key.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if (u >> 8) & 0x7F != 0x7F:  # the layout's arithmetic holds: learn T
        mul, corr = _layout(w, kl)
        if len(learned) >= _LARGE_MAX:
            learned.clear()
        learned[int.from_bytes(head, "little") - u * mul - corr[u & 0x7F]] = name
    return name, hl, m


class TileParser:
    """``parse_example(d[s:e])`` (squeezed) for tile-shaped records, else ``None``.

    Parameters
    ----------
    decode_entry
        The generic decoding of one small map entry, for entries not yet in
        the cache (:func:`tilestream.tfrecord._decode.small_entry`).

    Attributes
    ----------
    small : dict[bytes, tuple[str, Any]]
        Decoded small map entries: complete entry bytes to ``(name, value)``.
    large : tuple[dict[int, str], ...]
        Learned heads of large entries, per varint width (2 or 3): constant part to name.
    bad_run, skip : int
        After ``bad_run`` records in a row that are not tile-shaped (declined,
        or with more than three small entries not seen before), the next
        ``skip`` calls return ``None`` at once: on other data the attempt
        would only add to the generic parser's time.
    """

    def __init__(self, decode_entry: EntryDecoder) -> None:
        self._decode_entry = decode_entry
        self.small: dict[bytes, tuple[str, Any]] = {}
        self.large: tuple[dict[int, str], ...] = ({}, {}, {}, {})
        self.bad_run = _BAD_RUN
        self.skip = _SKIP
        self._run = 0  # records in a row not tile-shaped
        self._paused = 0  # calls still to skip

    def parse(self, d: _Buf, s: int, e: int) -> dict[str, Any] | None:
        """The decoded record in ``d[s:e]``, or ``None`` when it is not tile-shaped.

        May raise ``IndexError`` on bytes that end early; callers treat that
        as ``None`` (and the generic parser then reports the real error).
        """
        if self._paused:
            self._paused -= 1
            return None
        out = self._parse(d, s, e)
        if out is None:
            self._run += 1
            if self._run >= self.bad_run:
                self._run = 0
                self._paused = self.skip
        elif self._run:
            self._run = 0
        return out

    def _small(self, ent: bytes) -> tuple[str, Any] | None:
        """Decode a small entry not in the cache; cache it when its value is immutable."""
        r = self._decode_entry(ent)
        if r is not None and (r[1] is None or type(r[1]) in (bytes, int, float)):
            small = self.small
            if len(small) >= _SMALL_MAX:
                small.clear()
            small[ent] = r
        return r

    def _parse(self, d: _Buf, s: int, e: int) -> dict[str, Any] | None:
        # Example { Features features = 1; } spanning the whole payload.
        if d[s] != 0x0A:
            return None
        b = d[s + 1]
        if b < 0x80:
            q = s + 2
            body = b
        else:
            c = d[s + 2]
            if c < 0x80:
                q = s + 3
                body = (b & 0x7F) | (c << 7)
            else:
                t = d[s + 3]
                if t >= 0x80:
                    return None
                q = s + 4
                body = (b & 0x7F) | ((c & 0x7F) << 7) | (t << 14)
        if q + body != e:
            return None
        small = self.small
        misses = 0
        layouts2 = _LAYOUTS[2]
        layouts3 = _LAYOUTS[3]
        out: dict[str, Any] = {}
        while q < e:
            el = d[q + 1]
            if el < 0x80:  # a small entry, looked up whole
                q2 = q + 2 + el
                r = small.get(d[q:q2])
                if r is None:
                    misses += 1
                    if d[q] != 0x0A or q2 > e or misses > _MAX_MISSES:
                        return None
                    r = self._small(d[q:q2])
                    if r is None:
                        return None
                out[r[0]] = r[1]
                q = q2
                continue
            # A large entry: one bytes value with lengths of width w (2 or 3 bytes).
            # X = T + u * MUL exactly when the four lengths are u + constant and
            # everything else (tags, key) matches the learned head T of that key.
            if d[q + 2] >= 0x80:
                w = 3
                kl = d[q + 5]
                hl = 18 + kl
                x = int.from_bytes(d[q : q + hl], "little")
                u = x >> (8 * hl - 24)
                lay = layouts3[kl] if kl <= _MAX_KEY else None
                ok = u & 0x808080 == 0x008080
            else:
                w = 2
                kl = d[q + 4]
                hl = 14 + kl
                x = int.from_bytes(d[q : q + hl], "little")
                u = x >> (8 * hl - 16)
                lay = layouts2[kl] if kl <= _MAX_KEY else None
                ok = u & 0x8080 == 0x0080
            if (
                ok
                and lay is not None
                and (u >> 8) & 0x7F != 0x7F
                and (name := self.large[w].get(x - u * lay[0] - lay[1][u & 0x7F])) is not None
            ):
                m = (u & 0x7F) | ((u >> 1) & 0x3F80) | ((u >> 2) & 0x1FC000)
            else:
                head = _large_entry(d, q, w, self.large[w])
                if head is None:
                    return None
                name, hl, m = head
            q += hl
            out[name] = d[q : q + m]
            q += m
        if q != e:
            return None
        return out
