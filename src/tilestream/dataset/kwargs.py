"""The keyword arguments :class:`~tilestream.dataset.Dataset` passes through, typed.

For ``**kwargs: Unpack[...]``: a type checker sees each keyword a caller
gives :meth:`Dataset.extract_tiles` and :meth:`Dataset.crossfolds`. (Those of
:meth:`Dataset.torch` and :meth:`Dataset.tensorflow` are
:class:`tilestream.loaders.options.TileKwargs` and
:class:`tilestream.tf.dataset.TFTileKwargs`.)
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from tilestream.dataset.crossfolds import CrossfoldOptions
from tilestream.extract.config import ConfigOptions

if TYPE_CHECKING:
    from concurrent.futures import Executor

    from tilestream.extract.config import ExtractConfig
    from tilestream.extract.run import ProgressCallback

__all__ = ["CrossfoldKwargs", "ExtractTilesKwargs"]


class ExtractTilesKwargs(ConfigOptions, total=False):
    """The keywords :meth:`Dataset.extract_tiles` passes to :func:`~tilestream.extract.extract_slides`.

    The tile size is the dataset's; every other extraction option is a
    keyword (:class:`~tilestream.extract.config.ConfigOptions`) or in ``config``.
    """

    config: ExtractConfig | None
    executor: Executor | None
    workers: int | None
    threads: int | None
    overwrite: bool
    to_images: bool
    roi_dir: str | os.PathLike[str] | None
    progress: ProgressCallback | None


#: The keywords :meth:`Dataset.crossfolds` passes to :func:`~tilestream.dataset.generate_crossfolds`.
CrossfoldKwargs = CrossfoldOptions
