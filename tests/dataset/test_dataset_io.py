"""sf.io utilities on real tiles: images <-> TFRecords, split, merge, shuffle, join, transform."""

from __future__ import annotations

import io
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tilestream.dataset import (
    extract_tiles,
    join_tfrecord,
    merge_tfrecords,
    shuffle_tfrecord,
    split_tfrecord,
    transform_tfrecord,
    write_tfrecords_merge,
    write_tfrecords_multi,
    write_tfrecords_single,
)
from tilestream.errors import ConfigError, TileStreamError, UnsupportedRecordError
from tilestream.tfrecord import (
    decode_image,
    detect_image_format,
    get_locations_from_tfrecord,
    iter_records,
    load_index,
    parse_example,
)

pytestmark = pytest.mark.testdata


def _records(path: Path) -> list[dict]:
    return [parse_example(r) for r in iter_records(path)]


def _tiles(path: Path) -> Counter:
    """(slide, x, y, image bytes) of every record, as a multiset."""
    return Counter((r["slide"], r["loc_x"], r["loc_y"], r["image_raw"]) for r in _records(path))


def _index_is_fresh(path: Path) -> None:
    index = load_index(path, rebuild=False)  # raises when missing or stale
    assert len(index) == sum(1 for _ in iter_records(path))
    assert index.locations is not None
    assert [tuple(x) for x in index.locations.tolist()] == [
        (r["loc_x"], r["loc_y"]) for r in _records(path)
    ]


def _files(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


def test_tiles_roundtrip_through_loose_images(real_dir: Path, tmp_path: Path) -> None:
    src = real_dir / "slideA.tfrecords"
    n = extract_tiles(src, tmp_path / "loose")
    original = _tiles(src)
    assert n == sum(original.values()) > 0
    names = sorted(p.name for p in (tmp_path / "loose" / "slideA").iterdir())
    assert all(name.startswith("slideA_") and name.endswith(".jpg") for name in names)
    assert n == write_tfrecords_single(
        tmp_path / "loose" / "slideA", tmp_path / "tfr", "slideA.tfrecords", "slideA", seed=1
    )
    back = tmp_path / "tfr" / "slideA.tfrecords"
    assert _tiles(back) == original  # same tiles, same locations, byte for byte
    _index_is_fresh(back)
    assert write_tfrecords_multi(tmp_path / "loose", tmp_path / "multi") == n
    assert _tiles(tmp_path / "multi" / "slideA.tfrecords") == original


def test_locations_from_both_name_forms_and_defaults(tmp_path: Path) -> None:
    d = tmp_path / "imgs"
    d.mkdir()
    for name in ("t_10_20.png", "t_30-40.png", "plain.png"):
        Image.new("RGB", (4, 4)).save(d / name)
    write_tfrecords_single(d, tmp_path, "x.tfrecords", "x", shuffle=False)
    assert get_locations_from_tfrecord(tmp_path / "x.tfrecords") == [(0, 0), (10, 20), (30, 40)]


def test_not_an_image_leaves_nothing_behind(real_dir: Path, tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    extract_tiles(real_dir / "slideA.tfrecords", loose)
    extract_tiles(real_dir / "slideB.tfrecords", loose)
    bad = loose / "slideB" / "slideB_999-999.jpg"
    bad.write_bytes(b"this is text, not a JPEG")
    out = tmp_path / "out"
    for fn in (
        lambda: write_tfrecords_multi(loose, out),
        lambda: write_tfrecords_merge(loose, out, "all.tfrecords"),
        lambda: write_tfrecords_single(loose / "slideB", out, "b.tfrecords", "b"),
    ):
        with pytest.raises(ConfigError, match="not a JPEG or PNG image") as err:
            fn()
        assert str(bad) in str(err.value)
    # slideA's folder was fine, but nothing at all was written
    assert not out.exists() or _files(out) == []
    # a truncated JPEG header is caught too
    bad.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF")
    with pytest.raises(ConfigError, match=r"slideB_999-999\.jpg"):
        write_tfrecords_multi(loose, out)
    assert not out.exists() or _files(out) == []


def test_mixed_jpeg_and_png_is_refused(real_dir: Path, tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    extract_tiles(real_dir / "slideA.tfrecords", loose)
    first = sorted((loose / "slideA").iterdir())[0]
    png = first.with_name("slideA_5000-5000.png")
    Image.open(first).save(png)
    with pytest.raises(ConfigError, match=r"is PNG but .* is JPEG") as err:
        write_tfrecords_single(loose / "slideA", tmp_path / "out", "a.tfrecords", "slideA")
    assert str(png) in str(err.value)
    assert not (tmp_path / "out").exists() or _files(tmp_path / "out") == []


def test_existing_outputs_are_not_replaced_without_overwrite(
    real_dir: Path, tmp_path: Path
) -> None:
    loose = tmp_path / "loose"
    extract_tiles(real_dir / "slideA.tfrecords", loose)
    write_tfrecords_single(loose / "slideA", tmp_path, "a.tfrecords", "slideA")
    before = (tmp_path / "a.tfrecords").read_bytes()
    with pytest.raises(ConfigError, match="output exists"):
        write_tfrecords_single(loose / "slideA", tmp_path, "a.tfrecords", "slideA")
    assert (tmp_path / "a.tfrecords").read_bytes() == before
    write_tfrecords_single(loose / "slideA", tmp_path, "a.tfrecords", "slideA", overwrite=True)
    # loose tiles: identical files are fine, differing ones need overwrite
    assert extract_tiles(real_dir / "slideA.tfrecords", loose) > 0
    victim = sorted((loose / "slideA").iterdir())[0]
    victim.write_bytes(b"changed")
    with pytest.raises(ConfigError, match="exists with other content"):
        extract_tiles(real_dir / "slideA.tfrecords", loose)
    assert victim.read_bytes() == b"changed"
    assert not [p for p in loose.iterdir() if p.name.startswith(".")]  # staging removed


def test_split_merge_join_shuffle_keep_every_record(real_dir: Path, tmp_path: Path) -> None:
    inputs = [real_dir / f"slide{c}.tfrecords" for c in "ABC"]
    expected = sum((_tiles(p) for p in inputs), Counter())
    merged = tmp_path / "merged.tfrecords"
    assert merge_tfrecords(inputs, merged) == sum(expected.values())
    assert _tiles(merged) == expected
    _index_is_fresh(merged)

    counts = split_tfrecord(merged, tmp_path / "split")
    assert counts == {
        c: sum(1 for t in expected if t[0] == c.encode()) for c in ("slideA", "slideB", "slideC")
    }
    for name in counts:
        part = tmp_path / "split" / f"{name}.tfrecords"
        assert _tiles(part) == _tiles(real_dir / f"{name}.tfrecords")
        _index_is_fresh(part)

    joined = tmp_path / "joined.tfrecords"
    assert join_tfrecord(tmp_path / "split", joined, seed=3) == sum(expected.values())
    assert _tiles(joined) == expected
    order = [(r["slide"], r["loc_x"], r["loc_y"]) for r in _records(joined)]
    assert order != sorted(order)  # interleaved, not concatenated
    _index_is_fresh(joined)
    renamed = tmp_path / "renamed.tfrecords"
    join_tfrecord(tmp_path / "split", renamed, "all", seed=3)
    assert {r["slide"] for r in _records(renamed)} == {b"all"}

    target = tmp_path / "shuffled.tfrecords"
    shutil.copy(merged, target)
    before = [r["image_raw"] for r in _records(target)]
    assert shuffle_tfrecord(target, seed=5) == len(before)
    after = [r["image_raw"] for r in _records(target)]
    assert after != before and sorted(after) == sorted(before)
    _index_is_fresh(target)


def test_merge_refuses_mixed_image_formats(real_dir: Path, tmp_path: Path) -> None:
    png = tmp_path / "png.tfrecords"
    transform_tfrecord(real_dir / "slideA.tfrecords", png, img_format="png")
    with pytest.raises(ConfigError, match="must match"):
        merge_tfrecords([real_dir / "slideB.tfrecords", png], tmp_path / "m.tfrecords")
    assert not (tmp_path / "m.tfrecords").exists()


def test_transform_reencodes_resizes_and_renames(real_dir: Path, tmp_path: Path) -> None:
    src = real_dir / "slideA.tfrecords"
    out = tmp_path / "t.tfrecords"
    n = transform_tfrecord(src, out, assign_slide="renamed", resize=32, img_format="png")
    recs, orig = _records(out), _records(src)
    assert n == len(orig) == len(recs)
    for a, b in zip(orig, recs, strict=True):
        assert b["slide"] == b"renamed" and (a["loc_x"], a["loc_y"]) == (b["loc_x"], b["loc_y"])
        assert detect_image_format(b["image_raw"]) == "png"
        assert decode_image(b["image_raw"]).shape == (32, 32, 3)
        small = np.asarray(
            Image.open(io.BytesIO(a["image_raw"]))
            .convert("RGB")
            .resize((32, 32), Image.Resampling.LANCZOS)
        )
        assert np.array_equal(decode_image(b["image_raw"]), small)
    _index_is_fresh(out)
    q = tmp_path / "q.tfrecords"
    transform_tfrecord(src, q, quality=50, img_format="jpeg", assign_slide=lambda s: s + "_q50")
    assert {r["slide"] for r in _records(q)} == {b"slideA_q50"}
    assert q.stat().st_size < src.stat().st_size
    # in place: origin == target
    shutil.copy(src, tmp_path / "inplace.tfrecords")
    transform_tfrecord(tmp_path / "inplace.tfrecords", tmp_path / "inplace.tfrecords", "other")
    assert {r["slide"] for r in _records(tmp_path / "inplace.tfrecords")} == {b"other"}
    assert [r["image_raw"] for r in _records(tmp_path / "inplace.tfrecords")] == [
        r["image_raw"] for r in orig
    ]


def test_bad_inputs_leave_no_output(tfrecords_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UnsupportedRecordError, match="no image_raw"):
        transform_tfrecord(
            tfrecords_dir / "raccoon_test.record", tmp_path / "r.tfrecords", resize=8
        )
    with pytest.raises(UnsupportedRecordError, match="no 'slide' feature"):
        split_tfrecord(tfrecords_dir / "raccoon_test.record", tmp_path / "split")
    corrupt = tfrecords_dir / "corrupted" / "pets_examples.domj07-corrupted.record"
    copy = tmp_path / "c.tfrecords"
    shutil.copy(corrupt, copy)
    with pytest.raises(TileStreamError):
        shuffle_tfrecord(copy, seed=0)
    assert copy.read_bytes() == corrupt.read_bytes()  # the original is untouched
    with pytest.raises(TileStreamError):
        merge_tfrecords([corrupt], tmp_path / "m.tfrecords")
    with pytest.raises(TileStreamError):
        extract_tiles(corrupt, tmp_path / "loose")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.tfrecords", "loose", "split"]
    assert _files(tmp_path / "loose") == [] and _files(tmp_path / "split") == []


def test_compressed_tfrecord_shuffled_in_place_stays_compressed(
    tfrecords_dir: Path, tmp_path: Path
) -> None:
    src = tfrecords_dir / "tfx_penguin_train_data_tfrecord-00000-of-00001.gz"
    copy = tmp_path / "penguin.tfrecord.gz"
    shutil.copy(src, copy)
    assert shuffle_tfrecord(copy, seed=1) == 234
    assert copy.read_bytes()[:2] == b"\x1f\x8b"
    before, after = list(iter_records(src)), list(iter_records(copy))
    assert before != after and sorted(before) == sorted(after)


def test_empty_image_folders(tmp_path: Path) -> None:
    (tmp_path / "in" / "empty").mkdir(parents=True)
    with pytest.raises(ConfigError, match="no JPEG or PNG images"):
        write_tfrecords_single(tmp_path / "in" / "empty", tmp_path / "out", "e.tfrecords", "e")
    with pytest.raises(ConfigError, match="no subfolder holds JPEG or PNG images"):
        write_tfrecords_multi(tmp_path / "in", tmp_path / "out")
    (tmp_path / "in" / "full").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "in" / "full" / "t_0_0.png")
    assert write_tfrecords_multi(tmp_path / "in", tmp_path / "out") == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "full.index.npz",
        "full.tfrecords",
    ]


def test_hue_shift_turns_the_hue(real_dir: Path, tmp_path: Path) -> None:
    src = real_dir / "slideA.tfrecords"
    out = tmp_path / "h.tfrecords"
    transform_tfrecord(src, out, hue_shift=0.5, img_format="png")
    for a, b in zip(_records(src)[:5], _records(out)[:5], strict=True):
        before = np.asarray(Image.fromarray(decode_image(a["image_raw"])).convert("HSV"))
        after = np.asarray(Image.fromarray(decode_image(b["image_raw"])).convert("HSV"))
        coloured = before[..., 1] > 60  # hue is meaningful where saturation is
        turn = (after[..., 0].astype(int) - before[..., 0].astype(int)) % 256
        assert np.median(turn[coloured]) == pytest.approx(128, abs=6)
