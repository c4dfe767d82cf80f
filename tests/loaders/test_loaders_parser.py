"""Parsers (Slideflow semantics), augmentation letters and dtype conversion.

The tests that read a TFRecord run once per ``storage`` kind (``local``; ``s3`` and ``http``
read the same file from SeaweedFS).
"""

from __future__ import annotations

import numpy as np
import pytest
import simplejpeg

from tilestream.errors import ConfigError, CorruptRecordError
from tilestream.loaders import (
    augment_image,
    convert_dtype,
    get_tfrecord_parser,
    parse_augment,
    per_image_standardization,
    tfrecord_loader,
)


def test_feature_selection_modes(storage, write_tfrecords, real_tiles):
    (path,) = storage.put(write_tfrecords([("s1", 3)]))

    def first(parser):
        return next(iter(tfrecord_loader(path, parser=parser, **storage.kw)))

    everything = first(get_tfrecord_parser(path, **storage.kw))
    assert set(everything) == {"image_raw", "slide", "loc_x", "loc_y"}
    assert everything["slide"] == "s1"
    assert np.array_equal(everything["image_raw"], simplejpeg.decode_jpeg(real_tiles[0]))
    assert first(get_tfrecord_parser(path, ["loc_y", "slide"], **storage.kw)) == (1000, "s1")
    assert first(get_tfrecord_parser(path, {"x": "loc_x", "name": "slide"}, **storage.kw)) == {
        "x": 0,
        "name": "s1",
    }
    assert first(get_tfrecord_parser(path, "loc_x", **storage.kw)) == 0
    raw = first(get_tfrecord_parser(path, ["image_raw"], decode_images=False, **storage.kw))
    assert raw == (real_tiles[0],)


def test_missing_features(storage, write_tfrecords):
    (path,) = storage.put(write_tfrecords([("s1", 1)]))
    with pytest.raises(ConfigError, match=r"features \['label'\] are not in this TFRecord"):
        get_tfrecord_parser(path, ["slide", "label"], **storage.kw)
    parser = get_tfrecord_parser(path, ["slide", "label"], error_if_invalid=False, **storage.kw)
    assert next(iter(tfrecord_loader(path, parser=parser, **storage.kw))) == ("s1", None)


def test_standardize_torch_output_and_img_size(storage, torch, write_tfrecords, real_tiles):
    (path,) = storage.put(write_tfrecords([("s1", 1)]))
    want = simplejpeg.decode_jpeg(real_tiles[0]).astype(np.float32) / 127.5 - 1
    img = next(
        iter(
            tfrecord_loader(
                path,
                parser=get_tfrecord_parser(path, "image_raw", standardize=True, **storage.kw),
                **storage.kw,
            )
        )
    )
    np.testing.assert_allclose(img, want, rtol=0, atol=1e-6)
    t = next(
        iter(
            tfrecord_loader(
                path,
                parser=get_tfrecord_parser(path, "image_raw", to_numpy=False, **storage.kw),
                **storage.kw,
            )
        )
    )
    assert t.shape == (3, 32, 32)
    assert t.dtype == torch.uint8
    bad = get_tfrecord_parser(path, "image_raw", img_size=64, **storage.kw)
    with pytest.raises(ConfigError, match="expected img_size=64"):
        list(tfrecord_loader(path, parser=bad, **storage.kw))


def test_corrupt_jpeg_is_a_corrupt_record(storage, write_tfrecords, tmp_path):
    from tilestream.tfrecord import TFRecordWriter, serialized_record

    path = str(tmp_path / "bad.tfrecords")
    with TFRecordWriter(path) as w:
        w.write(serialized_record("s", b"\xff\xd8\xff\xe0 not a jpeg", 0, 0))
    path = storage.name(path)
    parser = get_tfrecord_parser(path, "image_raw", **storage.kw)
    with pytest.raises(CorruptRecordError, match=r"bad.tfrecords: record 0 at byte 0: .*JPEG"):
        list(tfrecord_loader(path, parser=parser, **storage.kw))
    stream = tfrecord_loader(path, parser=parser, on_error="skip", **storage.kw)
    assert list(stream) == []
    assert stream.skipped == 1


def test_augmentation_letters():
    assert parse_augment(True) == "xyrjb"
    assert parse_augment("bx") == "xb"
    assert parse_augment("") == ""
    assert parse_augment("n") == "n"
    with pytest.raises(ConfigError, match="unknown augmentation letter"):
        parse_augment("xq")


def test_augmentation_is_seeded_and_does_what_it_says(real_tiles):
    # The tile with the most texture (a flat background tile can survive recompression intact).
    img = max((simplejpeg.decode_jpeg(t) for t in real_tiles), key=lambda im: im.std())
    outs = [augment_image(img, "xyr", np.random.default_rng(s)) for s in range(40)]
    variants = {o.tobytes() for o in outs}
    assert len(variants) == 8  # the dihedral group of the square
    for o in outs:
        assert sorted(o.ravel().tolist()) == sorted(img.ravel().tolist())
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    for _ in range(20):
        a = augment_image(img, "xyrjb", rng_a)
        b = augment_image(img, "xyrjb", rng_b)
        assert np.array_equal(a, b)
    # j and b change pixel values (at 50% and 10%), never the shape.
    changed = [
        not np.array_equal(augment_image(img, "j", np.random.default_rng(s)), img)
        for s in range(200)
    ]
    assert 0.35 < np.mean(changed) < 0.65
    blurred = [
        not np.array_equal(augment_image(img, "b", np.random.default_rng(s)), img)
        for s in range(400)
    ]
    assert 0.04 < np.mean(blurred) < 0.17


def test_convert_dtype_numpy_and_torch(torch, real_tiles):
    img = simplejpeg.decode_jpeg(real_tiles[1])
    f = convert_dtype(img, np.float32)
    assert f.dtype == np.float32
    np.testing.assert_allclose(f, img / 127.5 - 1, atol=1e-6)
    assert np.array_equal(convert_dtype(f, np.uint8), img)
    t = convert_dtype(img, torch.uint8)
    assert t.shape == (3, 32, 32)
    assert np.array_equal(t.permute(1, 2, 0).numpy(), img)
    tf32 = convert_dtype(img, torch.float32)
    torch.testing.assert_close(tf32, torch.from_numpy(f).permute(2, 0, 1))
    assert np.array_equal(convert_dtype(tf32, np.uint8), img)
    assert np.array_equal(convert_dtype(t, np.uint8), img)
    batch = np.stack([img, img[::-1]])
    tb = convert_dtype(batch, torch.uint8)
    assert tb.shape == (2, 3, 32, 32)
    assert np.array_equal(convert_dtype(tb, np.uint8), batch)
    with pytest.raises(ConfigError, match="cannot convert to"):
        convert_dtype(img, np.int16)
    with pytest.raises(ConfigError, match="3-D"):
        convert_dtype(img[0], np.float32)


@pytest.mark.tensorflow
def test_convert_dtype_tensorflow(tf, real_tiles):
    img = simplejpeg.decode_jpeg(real_tiles[2])
    t = convert_dtype(img, tf.uint8)
    assert t.dtype == tf.uint8
    assert np.array_equal(t.numpy(), img)
    s = convert_dtype(img, tf.float32)
    np.testing.assert_allclose(s.numpy(), tf.image.per_image_standardization(img).numpy())
    np.testing.assert_allclose(per_image_standardization(img), s.numpy(), atol=1e-5)
    np.testing.assert_allclose(convert_dtype(t, np.float32), s.numpy(), atol=1e-5)
    assert np.array_equal(convert_dtype(t, np.uint8), img)
    with pytest.raises(ConfigError, match="cannot be undone"):
        convert_dtype(s, np.uint8)
    batch = convert_dtype(np.stack([img, img]), tf.float32)
    assert batch.shape == (2, 32, 32, 3)


def test_stain_augmentation_needs_a_normalizer_and_is_seeded(write_tfrecords, real_tiles):
    from tilestream.loaders.augment import resolve_normalizer

    (path,) = write_tfrecords([("s1", 4)])
    with pytest.raises(ConfigError, match="needs a stain normalizer"):
        get_tfrecord_parser(path, "image_raw", augment="n")
    with pytest.raises(ConfigError, match="needs a stain normalizer"):
        resolve_normalizer(lambda im: im, "n")  # a plain callable cannot augment

    def images(augment, seed):
        parser = get_tfrecord_parser(
            path, "image_raw", augment=augment, normalizer="reinhard", seed=seed
        )
        return list(tfrecord_loader(path, parser=parser))

    plain = images("", 0)
    a, b, c = images("n", 0), images("n", 0), images("n", 1)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, plain, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
