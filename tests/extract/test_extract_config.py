"""The extraction config's typed keywords."""

from __future__ import annotations

import dataclasses
import typing

from tilestream.extract.config import ConfigKwargs, ConfigOptions, ExtractConfig


def test_the_typed_keywords_are_exactly_the_config_fields() -> None:
    # ``**options: Unpack[ConfigKwargs]`` is what a type checker sees: a field added to
    # ExtractConfig without its keyword would be flagged as a wrong keyword in users' code.
    fields = {f.name for f in dataclasses.fields(ExtractConfig)}
    assert set(typing.get_type_hints(ConfigKwargs)) == fields
    assert set(ConfigOptions.__annotations__) == fields - {"tile_px", "tile_um"}
