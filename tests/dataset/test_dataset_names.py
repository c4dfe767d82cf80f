"""``extract_tiles`` has one meaning per place: what each name does, and the aliases kept."""

from __future__ import annotations

import inspect


def test_tfrecord_to_images_is_slideflows_extract_tiles() -> None:
    from tilestream import dataset
    from tilestream.dataset import images, io

    assert io.tfrecord_to_images is images.tfrecord_to_images
    assert io.extract_tiles is io.tfrecord_to_images  # Slideflow's sf.io name, kept
    assert dataset.extract_tiles is dataset.tfrecord_to_images
    assert {"extract_tiles", "tfrecord_to_images"} <= set(io.__all__) & set(dataset.__all__)
    for name in images.__all__:  # every loose-image name is still importable from io
        assert getattr(io, name) is getattr(images, name)


def test_dataset_extract_tiles_means_slide_extraction() -> None:
    from tilestream.dataset import Dataset, extraction

    doc = inspect.getdoc(Dataset.extract_tiles) or ""
    assert "Slideflow's ``Dataset.extract_tiles``" in doc
    assert "extract_dataset_slides(" in inspect.getsource(Dataset.extract_tiles)
    assert "extract_slides(tasks" in inspect.getsource(extraction.extract_dataset_slides)
