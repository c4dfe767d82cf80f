"""A slide's associated images (label, macro, thumbnail...) as a lazy mapping."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from PIL import Image

from tilestream.slide.backends.base import SlideBackend
from tilestream.slide.reading import reading

__all__ = ["AssociatedImages"]


class AssociatedImages(Mapping[str, Image.Image]):
    """Lazy mapping: an associated image is decoded when looked up.

    Parameters
    ----------
    path
        The slide file (named by errors).
    backend
        The backend reading the slide.
    check_open
        Returns ``backend`` while the slide is open, else raises
        :class:`~tilestream.errors.SlideError`; called before each decode.
    """

    def __init__(
        self, path: Path | str, backend: SlideBackend, check_open: Callable[[], SlideBackend]
    ) -> None:
        self._path = path
        self._backend = backend
        self._check_open = check_open

    def __getitem__(self, name: str) -> Image.Image:
        impl = self._check_open()
        if name not in impl.associated_image_names:
            raise KeyError(name)
        with reading(self._path, "associated image {!r}", name):
            return impl.read_associated_image(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._backend.associated_image_names)

    def __len__(self) -> int:
        return len(self._backend.associated_image_names)
