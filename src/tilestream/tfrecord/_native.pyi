# Type stub of the compiled core (src/tilestream/tfrecord/_native.c).
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any

from typing_extensions import Buffer

HARDWARE_CRC: int
THREADS: int

def crc32c(data: Buffer, value: int = 0, /) -> int: ...
def masked_crc32c(data: Buffer, /) -> int: ...
def parse_tile(data: Buffer, /) -> dict[str, Any] | None: ...
def tile_location(data: Buffer, /) -> tuple[int, int] | None: ...

class Scanner(Iterator[Any]):
    pos: int
    records: int
    problem: bool
    threaded: bool
    def __init__(
        self,
        buffer: Buffer,
        *,
        start: int = 0,
        records: int = 0,
        verify: bool = True,
        parse: Callable[[int, int, int, int], Any] | None = None,
        tiles: bool = True,
        threaded: bool = True,
    ) -> None: ...
    def __next__(self) -> Any: ...
    def close(self) -> None: ...
    def __enter__(self) -> Scanner: ...
    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
