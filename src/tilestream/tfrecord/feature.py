"""One ``tf.train.Feature``: a typed list of bytes, float32 or int64 values.

Examples
--------
>>> Feature.float_list([0.5]).value
array([0.5], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from tilestream.errors import ConfigError

__all__ = ["Feature", "FeatureKind"]

FeatureKind = Literal["bytes_list", "float_list", "int64_list"]
_I64_MAX = (1 << 63) - 1


class Feature:
    """One ``tf.train.Feature``, held losslessly.

    Parameters
    ----------
    kind
        ``"bytes_list"``, ``"float_list"``, ``"int64_list"``, or ``None`` for a
        Feature with no kind set (TensorFlow writes these for missing values).
    value
        ``list[bytes]`` for bytes, a float32 array for floats, an int64 array
        for ints; ``[]`` when ``kind`` is ``None``.

    Examples
    --------
    >>> Feature.int64_list([1, -2])
    Feature(kind='int64_list', value=array([ 1, -2]))
    >>> Feature.bytes_list(["a", b"b"]).value
    [b'a', b'b']
    >>> Feature.float_list([]) == Feature("float_list", np.zeros(0, np.float32))
    True
    """

    __slots__ = ("kind", "value")

    kind: FeatureKind | None
    value: list[bytes] | npt.NDArray[Any]

    def __init__(self, kind: FeatureKind | None, value: list[bytes] | npt.NDArray[Any]) -> None:
        self.kind = kind
        self.value = value

    @classmethod
    def bytes_list(cls, values: Iterable[bytes | str]) -> Feature:
        """A bytes feature; ``str`` values are encoded as UTF-8."""
        out: list[bytes] = []
        for v in values:
            if isinstance(v, str):
                out.append(v.encode("utf-8"))
            elif isinstance(v, (bytes, bytearray, memoryview, np.bytes_)):
                out.append(bytes(v))
            else:
                raise ConfigError(f"bytes_list values must be bytes or str, not {type(v).__name__}")
        return cls("bytes_list", out)

    @classmethod
    def float_list(cls, values: Iterable[float] | npt.NDArray[Any]) -> Feature:
        """A float feature, stored as float32 like TensorFlow."""
        try:
            arr = np.array(
                values if isinstance(values, np.ndarray) else list(values), dtype=np.float32
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"float_list values must be numbers: {exc}") from exc
        return cls("float_list", arr.reshape(-1))

    @classmethod
    def int64_list(cls, values: Iterable[int] | npt.NDArray[Any]) -> Feature:
        """An int64 feature; bools become 0/1."""
        try:
            if isinstance(values, np.ndarray):
                if values.dtype.kind not in "iub":
                    raise TypeError(f"dtype {values.dtype} is not integral")
                if values.dtype == np.uint64 and values.size and values.max() > _I64_MAX:
                    raise OverflowError("value does not fit in int64")
                arr = values.astype(np.int64)
            else:
                items = list(values)
                for v in items:
                    if isinstance(v, (float, np.floating)) or not isinstance(
                        v, (int, np.integer, np.bool_)
                    ):
                        raise TypeError(f"{v!r} is not an integer")
                arr = np.array(items, dtype=np.int64)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ConfigError(f"int64_list values must be int64 integers: {exc}") from exc
        return cls("int64_list", arr.reshape(-1))

    def __len__(self) -> int:
        return len(self.value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Feature):
            return NotImplemented
        if self.kind != other.kind:
            return False
        if self.kind == "bytes_list" or self.kind is None:
            return list(self.value) == list(other.value)
        return bool(np.array_equal(self.value, other.value))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Feature(kind={self.kind!r}, value={self.value!r})"
