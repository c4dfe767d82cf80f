"""TFRecord random access, the Slideflow sf.io functions, image decoding and the CLI.

The tests that read a file run once per ``storage`` kind: ``local``, and ``s3`` and ``http``
reading the same file from SeaweedFS (``name`` is then its URL), with the same assertions.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from _remote import Remote
from tilestream.cli import cli, main
from tilestream.errors import (
    CorruptRecordError,
    EmptyTFRecordsError,
    InvalidTFRecordIndex,
    RecordNotFoundError,
)
from tilestream.tfrecord import (
    TFRecord,
    TFRecordWriter,
    decode_image,
    detect_image_format,
    detect_tfrecord_format,
    get_locations_from_tfrecord,
    get_tfrecord_by_index,
    get_tfrecord_by_location,
    get_tfrecord_length,
    iter_examples,
    parse_example,
    read_and_return_record,
    serialized_record,
    tfrecord_has_locations,
)

GRID = [(x * 256, y * 256) for y in range(4) for x in range(5)]


def _image(fmt: str, seed: int, size: tuple[int, int] = (32, 24)) -> tuple[bytes, np.ndarray]:
    rng = np.random.default_rng(seed)
    # smooth content (JPEG-friendly), not noise
    yy, xx = np.mgrid[0 : size[1], 0 : size[0]]
    arr = np.stack([(xx * 7 + seed) % 256, (yy * 5) % 256, ((xx + yy) * 3) % 256], -1)
    arr = (arr + rng.integers(0, 3, arr.shape)).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG" if fmt == "jpeg" else "PNG", quality=95)
    return buf.getvalue(), arr


@pytest.fixture
def tiles(tmp_path: Path) -> tuple[Path, list[bytes]]:
    path = tmp_path / "slide-1.tfrecords"
    images = [_image("jpeg", i)[0] for i in range(len(GRID))]
    with TFRecordWriter(path) as w:
        for img, (x, y) in zip(images, GRID, strict=True):
            w.write(serialized_record("slide-1", img, x, y), location=(x, y))
    return path, images


@pytest.fixture
def placed(tiles: tuple[Path, list[bytes]], storage: Remote) -> tuple[str, list[bytes]]:
    """``tiles`` as the reader gets them: the path, or the URL of the copy in ``storage``."""
    path, images = tiles
    return storage.name(path), images


def test_tfrecord_basics(placed: tuple[str, list[bytes]], storage: Remote) -> None:
    path, images = placed
    with TFRecord(path, **storage.kw) as tfr:
        assert len(tfr) == tfr.length == 20
        assert tfr.fields == ["image_raw", "slide", "loc_x", "loc_y"]
        assert tfr.img_format == "jpeg"
        assert tfr.locations == GRID
        rec = tfr[3]
        assert rec == {"image_raw": images[3], "slide": "slide-1", "loc_x": 768, "loc_y": 0}
        assert isinstance(rec["slide"], str)
        assert isinstance(rec["image_raw"], bytes)
        assert tfr[-1]["loc_x"] == GRID[-1][0]
        assert [r["loc_x"] for r in tfr[2:11:4]] == [GRID[i][0] for i in (2, 6, 10)]
        assert tfr[100:] == []
        assert [r["image_raw"] for r in tfr] == images
        assert tfr.index.shape == (20, 2)


def test_out_of_range_and_bad_keys(placed: tuple[str, list[bytes]], storage: Remote) -> None:
    path, _ = placed
    with TFRecord(path, **storage.kw) as tfr:
        with pytest.raises(InvalidTFRecordIndex, match="out of range"):
            tfr[20]
        with pytest.raises(IndexError):
            tfr[-21]
        with pytest.raises(TypeError):
            tfr["3"]  # type: ignore[call-overload]


def test_get_record_by_xy(placed: tuple[str, list[bytes]], storage: Remote) -> None:
    path, images = placed
    with TFRecord(path, **storage.kw) as tfr:
        for i, (x, y) in enumerate(GRID):
            slide, img = tfr.get_record_by_xy(x, y)
            assert slide == "slide-1"
            assert img == images[i]
        slide, arr = tfr.get_record_by_xy(256, 512, decode=True)
        assert isinstance(arr, np.ndarray)
        assert arr.shape == (24, 32, 3)
        with pytest.raises(RecordNotFoundError, match=r"\(1, 1\)") as info:
            tfr.get_record_by_xy(1, 1)
        assert isinstance(info.value, KeyError)
        assert tfr.index_of(1024, 768) == 19


def test_no_locations(tmp_path: Path, storage: Remote) -> None:
    path = tmp_path / "x.tfrecords"
    with TFRecordWriter(path) as w:
        w.write(b"\x0a\x00")  # an empty Example
    path = storage.name(path)
    with TFRecord(path, **storage.kw) as tfr:
        assert tfr.locations is None
        assert tfr[0] == {}
        assert tfr.img_format is None
        with pytest.raises(RecordNotFoundError, match="no loc_x"):
            tfr.get_record_by_xy(0, 0)


def test_pickles_by_path_and_reopens(placed: tuple[str, list[bytes]], storage: Remote) -> None:
    path, images = placed
    tfr = TFRecord(path, **storage.kw)
    assert tfr[0]["image_raw"] == images[0]
    state = pickle.dumps(tfr)
    # A path and options, not the data (a URL's: its store's options and the object's stat).
    assert len(state) < (1000 if storage.local else 2000)
    clone = pickle.loads(state)
    assert clone[5]["image_raw"] == images[5]
    tfr.close()
    assert tfr[1]["image_raw"] == images[1]  # reopens on use
    tfr.close()
    clone.close()


def test_tfrecord_works_in_a_worker_process(
    placed: tuple[str, list[bytes]], storage: Remote
) -> None:
    import multiprocessing as mp

    path, _ = placed
    tfr = TFRecord(path, **storage.kw)
    want = [tfr.read_raw(i) for i in (0, 7, 19)]  # opened (memory-mapped) in the parent
    ctx = mp.get_context("spawn")  # a fresh interpreter: only the pickled path crosses
    with ctx.Pool(1) as pool:
        got = pool.map_async(tfr.read_raw, [0, 7, 19]).get(timeout=120)
    assert got == want
    tfr.close()


def test_compressed_random_access(tmp_path: Path, storage: Remote) -> None:
    path = tmp_path / "c.tfrecord.gz"
    with TFRecordWriter(path, compression="gzip") as w:
        for i in range(5):
            w.write(serialized_record("c", bytes([i]) * 10, i, i + 1), location=(i, i + 1))
    path = storage.name(path)
    with TFRecord(path, **storage.kw) as tfr:
        assert len(tfr) == 5
        assert tfr[3]["image_raw"] == b"\x03" * 10
        assert tfr.get_record_by_xy(4, 5)[1] == b"\x04" * 10


def test_corrupt_payload_detected_on_access(
    tiles: tuple[Path, list[bytes]], storage: Remote
) -> None:
    path, _ = tiles
    with TFRecord(path) as tfr:
        off = int(tfr.index[4, 0])
    data = bytearray(path.read_bytes())
    data[off + 40] ^= 0xFF
    path.write_bytes(bytes(data))
    path = storage.name(path)
    with TFRecord(path, create_index=False, **storage.kw) as tfr:
        tfr[3]
        with pytest.raises(CorruptRecordError, match="data CRC") as info:
            tfr[4]
        assert (info.value.record, info.value.offset) == (4, off)
    with TFRecord(path, create_index=False, verify=False, **storage.kw) as tfr:
        assert tfr[4]["slide"] == "slide-1"


def test_empty_tfrecord(tmp_path: Path, storage: Remote) -> None:
    path = tmp_path / "e.tfrecords"
    path.write_bytes(b"")
    path = storage.name(path)
    with TFRecord(path, **storage.kw) as tfr:
        assert len(tfr) == 0
        assert list(tfr) == []
        with pytest.raises(EmptyTFRecordsError):
            tfr[0]
        with pytest.raises(EmptyTFRecordsError):
            _ = tfr.fields
    assert detect_tfrecord_format(path, **storage.kw) == (None, None)
    assert get_tfrecord_length(path, **storage.kw) == 0
    with pytest.raises(EmptyTFRecordsError):
        get_tfrecord_by_index(path, 0, **storage.kw)


def test_missing_file(tmp_path: Path, storage: Remote) -> None:
    name = str(tmp_path / "nope.tfrecords") if storage.local else storage.url("nope.tfrecords")
    with pytest.raises(FileNotFoundError):
        len(TFRecord(name, **storage.kw))


# --------------------------------------------------------------------------- sf.io


def test_slideflow_io_functions(placed: tuple[str, list[bytes]], storage: Remote) -> None:
    path, images = placed
    assert detect_tfrecord_format(path, **storage.kw) == (
        ["image_raw", "slide", "loc_x", "loc_y"],
        "jpeg",
    )
    assert get_tfrecord_length(path, **storage.kw) == 20
    rec = get_tfrecord_by_index(path, 7, **storage.kw)
    assert rec["slide"] == "slide-1"
    assert rec["image_raw"] == images[7]
    assert (rec["loc_x"], rec["loc_y"]) == GRID[7]
    with pytest.raises(InvalidTFRecordIndex, match="size: 20"):
        get_tfrecord_by_index(path, 20, **storage.kw)
    assert get_locations_from_tfrecord(path, **storage.kw) == GRID
    assert tfrecord_has_locations(path, **storage.kw)
    assert tfrecord_has_locations(path, check_y=True, **storage.kw)
    slide, img = get_tfrecord_by_location(path, (512, 256), **storage.kw)
    assert slide == "slide-1"
    assert isinstance(img, np.ndarray)
    assert img.shape == (24, 32, 3)
    _, raw = get_tfrecord_by_location(path, [512, 256], decode=False, **storage.kw)
    assert raw == images[GRID.index((512, 256))]
    _, raw = get_tfrecord_by_location(
        path, (0, 256), decode=False, locations_array=GRID, **storage.kw
    )
    assert raw == images[5]
    with pytest.raises(IndexError, match="tuple of two ints"):
        get_tfrecord_by_location(path, (1.5, 2), **storage.kw)  # type: ignore[arg-type]
    with pytest.raises(RecordNotFoundError):
        get_tfrecord_by_location(path, (3, 3), **storage.kw)


def test_sfio_without_an_index(tmp_path: Path, storage: Remote) -> None:
    path = tmp_path / "n.tfrecords"
    with TFRecordWriter(path, index=False) as w:
        for i in range(3):
            w.write(serialized_record("n", b"img", i, 2 * i))
    path = storage.name(path)
    assert get_tfrecord_length(path, **storage.kw) == 3
    assert get_locations_from_tfrecord(path, **storage.kw) == [(0, 0), (1, 2), (2, 4)]
    assert tfrecord_has_locations(path, **storage.kw)
    assert get_tfrecord_by_index(path, 2, **storage.kw)["loc_y"] == 4
    assert not list(tmp_path.glob("*.index*"))  # read-only helpers do not write


def test_tfrecord_has_locations_false(tmp_path: Path, storage: Remote) -> None:
    path = tmp_path / "n.tfrecords"
    with TFRecordWriter(path, index=False) as w:
        w.write(b"\x0a\x00")
    path = storage.name(path)
    assert not tfrecord_has_locations(path, **storage.kw)
    assert tfrecord_has_locations(path, check_x=False, **storage.kw)


def test_read_and_return_record() -> None:
    rec = serialized_record("old", b"img", 3, 4)
    assert read_and_return_record(rec) == rec
    out = parse_example(read_and_return_record(rec, assign_slide="new"))
    assert out == {"image_raw": b"img", "slide": b"new", "loc_x": 3, "loc_y": 4}

    def parser(data: bytes) -> dict[str, object]:
        p = parse_example(data)
        return {"slide": p["slide"], "image_raw": p["image_raw"]}

    assert parse_example(read_and_return_record(rec, parser, b"x")) == {
        "slide": b"x",
        "image_raw": b"img",
    }


# --------------------------------------------------------------------------- images


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_decode_image(fmt: str) -> None:
    data, arr = _image(fmt, 3)
    assert detect_image_format(data) == fmt
    img = decode_image(data)
    assert img.dtype == np.uint8
    assert img.shape == (24, 32, 3)
    if fmt == "png":
        np.testing.assert_array_equal(img, arr)
    else:
        assert np.abs(img.astype(int) - arr).mean() < 4
    np.testing.assert_array_equal(decode_image(data, img_type=fmt), img)


def test_decode_grayscale_and_rgba_png_to_rgb() -> None:
    for mode in ("L", "RGBA", "P"):
        buf = io.BytesIO()
        Image.new(mode, (5, 3)).save(buf, format="PNG")
        assert decode_image(buf.getvalue()).shape == (3, 5, 3)
    buf = io.BytesIO()
    Image.new("L", (6, 2), 128).save(buf, format="JPEG")
    gray = decode_image(buf.getvalue())
    assert gray.shape == (2, 6, 3)
    assert abs(int(gray[0, 0, 0]) - 128) <= 2


def test_decode_image_garbage() -> None:
    with pytest.raises(CorruptRecordError, match="cannot be decoded"):
        decode_image(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    with pytest.raises(CorruptRecordError):
        decode_image(b"hello")


# --------------------------------------------------------------------------- CLI


def test_cli_inspect(placed: tuple[str, list[bytes]], storage: Remote) -> None:
    path, _ = placed
    result = CliRunner().invoke(cli, ["inspect", path, *storage.cli_args])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "records: 20" in out
    for field in ("image_raw", "slide", "loc_x", "loc_y"):
        assert field in out
    assert "bytes_list" in out
    assert "int64_list" in out
    assert "jpeg 32x24" in out
    assert "locations: yes" in out
    assert "'slide-1'" in out


def test_cli_inspect_bad_file(
    tmp_path: Path, storage: Remote, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.tfrecords"
    bad.write_bytes(b"this is not a tfrecord file at all")
    assert main(["inspect", storage.name(bad), *storage.cli_args]) == 1
    out = capsys.readouterr()
    assert "bad.tfrecords" in out.out + out.err
    assert "length CRC" in out.out + out.err


def test_cli_index_folder_npz_and_text(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    for name in ("a", "b"):
        with TFRecordWriter(folder / f"{name}.tfrecords", index=False) as w:
            w.write(serialized_record(name, b"i", 1, 2))
    result = CliRunner().invoke(cli, ["index", str(folder)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in folder.glob("*.index.npz")) == ["a.index.npz", "b.index.npz"]
    assert "1 records, with locations" in result.output
    result = CliRunner().invoke(cli, ["index", str(folder / "a.tfrecords"), "--format", "text"])
    assert result.exit_code == 0, result.output
    assert (folder / "a.index").read_text() == "0 86\n"
    assert [r["loc_x"] for r in iter_examples(folder / "a.tfrecords")] == [1]


def test_cli_index_reports_bad_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tfrecords"
    bad.write_bytes(b"x" * 50)
    result = CliRunner().invoke(cli, ["index", str(bad)])
    assert result.exit_code != 0
    assert "bad.tfrecords" in result.output


def test_layer_imports_neither_tensorflow_nor_the_slide_layer() -> None:
    import subprocess
    import sys

    code = (
        "import sys, tilestream.tfrecord as t; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'torch') "
        "or m.startswith('tilestream.slide') or m.startswith('google.protobuf')]; "
        "assert not bad, bad; assert t.__all__"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_verified_records_are_not_rechecked_but_failures_repeat(
    tiles: tuple[Path, list[bytes]], storage: Remote
) -> None:
    path, _ = tiles
    with TFRecord(path) as tfr:
        off = int(tfr.index[2, 0])
    data = bytearray(path.read_bytes())
    data[off + 30] ^= 0x01
    path.write_bytes(bytes(data))
    path = storage.name(path)  # type: ignore[assignment]
    with TFRecord(path, create_index=False, **storage.kw) as tfr:
        for _ in range(2):
            with pytest.raises(CorruptRecordError):
                tfr[2]
        assert tfr[1]["loc_x"] == 256
        assert tfr[1]["loc_x"] == 256


def test_cli_index_unwritable_index_is_a_clean_error(tmp_path: Path) -> None:
    path = tmp_path / "a.tfrecords"
    with TFRecordWriter(path, index=False) as w:
        w.write(serialized_record("a", b"i", 1, 2))
    (tmp_path / "a.index.npz").mkdir()  # the index cannot be written there
    result = CliRunner().invoke(cli, ["index", str(path)])
    assert result.exit_code == 1
    assert "a.tfrecords" in result.output
    assert "could not be indexed" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
