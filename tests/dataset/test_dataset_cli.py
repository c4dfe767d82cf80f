"""CLI: tfrecord utilities, manifest, dataset summary, crossfolds."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tilestream.cli import main
from tilestream.dataset import load_annotations, read_manifest
from tilestream.tfrecord import iter_records, parse_example

pytestmark = pytest.mark.testdata


def _tiles(path: Path) -> Counter:
    return Counter(
        (r["slide"], r["loc_x"], r["loc_y"], r["image_raw"])
        for r in map(parse_example, iter_records(path))
    )


def test_tfrecord_commands_roundtrip(
    real_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = real_dir / "slideA.tfrecords", real_dir / "slideB.tfrecords"
    merged = tmp_path / "m.tfrecords"
    assert main(["tfrecord", "merge", str(a), str(b), "-o", str(merged)]) == 0
    assert _tiles(merged) == _tiles(a) + _tiles(b)
    assert main(["tfrecord", "split", str(merged), str(tmp_path / "split")]) == 0
    assert "slideA" in capsys.readouterr().out
    assert _tiles(tmp_path / "split" / "slideB.tfrecords") == _tiles(b)
    assert main(["tfrecord", "shuffle", str(merged), "--seed", "1"]) == 0
    assert _tiles(merged) == _tiles(a) + _tiles(b)
    assert (
        main(
            [
                "tfrecord",
                "join",
                str(tmp_path / "split"),
                str(tmp_path / "j.tfrecords"),
                "--seed",
                "2",
            ]
        )
        == 0
    )
    assert _tiles(tmp_path / "j.tfrecords") == _tiles(merged)
    out = tmp_path / "t.tfrecords"
    assert (
        main(
            [
                "tfrecord",
                "transform",
                str(a),
                str(out),
                "--slide",
                "new",
                "--resize",
                "16",
                "--format",
                "png",
            ]
        )
        == 0
    )
    assert {r["slide"] for r in map(parse_example, iter_records(out))} == {b"new"}
    assert main(["tfrecord", "to-images", str(a), str(b), "-o", str(tmp_path / "loose")]) == 0
    assert sorted(p.name for p in (tmp_path / "loose").iterdir()) == ["slideA", "slideB"]
    assert main(["tfrecord", "from-images", str(tmp_path / "loose"), str(tmp_path / "back")]) == 0
    assert _tiles(tmp_path / "back" / "slideA.tfrecords") == _tiles(a)
    assert (
        main(
            [
                "tfrecord",
                "from-images",
                str(tmp_path / "loose" / "slideB"),
                str(tmp_path / "one"),
                "--mode",
                "single",
            ]
        )
        == 0
    )
    assert _tiles(tmp_path / "one" / "slideB.tfrecords") == _tiles(b)
    capsys.readouterr()
    # an existing output is a one-line error, not a traceback
    assert main(["tfrecord", "merge", str(a), "-o", str(merged)]) == 1
    err = capsys.readouterr().err
    assert "output exists" in err and "Traceback" not in err


def test_from_images_bad_file_is_one_line_error(
    real_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    loose = tmp_path / "loose"
    assert (
        main(["tfrecord", "to-images", str(real_dir / "slideA.tfrecords"), "-o", str(loose)]) == 0
    )
    (loose / "slideA" / "broken.png").write_bytes(b"GIF89a not really")
    capsys.readouterr()
    assert main(["tfrecord", "from-images", str(loose), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "broken.png" in err and "not a JPEG or PNG image (looks like gif)" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_manifest_command(
    tfrecords_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "manifest.json"
    assert main(["manifest", str(tfrecords_dir), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "raccoon_test.record" in text and "CorruptRecordError" in text
    assert "2 unreadable or empty" in text
    assert read_manifest(out)["tfx_mnist.tfrecord"]["total"] == 1000


def test_dataset_summary_command(
    real_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ann = tmp_path / "ann.csv"
    ann.write_text("slide,patient,label\nslideA,p1,x\nslideB,p2,y\nslideZ,p3,y\n")
    args = [
        "dataset",
        "summary",
        "--tfrecords",
        str(real_root),
        "--annotations",
        str(ann),
        "--tile-px",
        "64",
        "--tile-um",
        "128",
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "slideZ" in text and "slideC" in text  # no TFRecord / no annotation
    assert main([*args, "--json", "--filter", "label=y"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["num_slides"] == 2 and data["slides_without_tfrecords"] == ["slideZ"]
    assert data["filters"] == {"label": ["y"]}
    ann.write_bytes(b"slide,label\nslideA,\xff\n")
    assert main(args) == 1
    assert "line 2: byte 0xff" in capsys.readouterr().err


def test_crossfolds_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "a.csv"
    rows = ["slide,patient,site,label"] + [f"s{i},p{i},S{i % 5},{'ab'[i % 2]}" for i in range(30)]
    csv.write_text("\n".join(rows) + "\n")
    out = tmp_path / "folds.csv"
    assert main(["crossfolds", str(csv), "--category", "label", "--k", "3", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "fold 3" in text and "optimal" in text
    ann = load_annotations(out)
    assert ann.columns == ["slide", "patient", "site", "label", "CV3"]
    site_fold: dict[str, str] = {}
    for r in ann.rows:
        assert site_fold.setdefault(r["site"], r["CV3"]) == r["CV3"]
    assert csv.read_text().splitlines()[0] == "slide,patient,site,label"  # input untouched
    assert (
        main(
            [
                "crossfolds",
                str(csv),
                "--category",
                "label",
                "--k",
                "2",
                "--in-place",
                "--method",
                "stratified",
            ]
        )
        == 0
    )
    assert load_annotations(csv).columns[-1] == "CV2"
    assert main(["crossfolds", str(csv), "--category", "nope"]) == 1
    assert "missing column 'nope'" in capsys.readouterr().err


def test_manifest_command_says_what_it_verified(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tilestream.tfrecord import TFRecordWriter, serialized_record

    path = tmp_path / "s.tfrecords"
    with TFRecordWriter(path) as w:
        for i in range(3):
            w.write(serialized_record("s", b"tile" * 8, i, 0))
    data = bytearray(path.read_bytes())
    data[12 + 5] ^= 0xFF  # the first record's data: its CRC no longer matches
    path.write_bytes(bytes(data))
    assert main(["manifest", str(tmp_path), "--no-write"]) == 0
    text = capsys.readouterr().out
    assert "not verified" in text and "--verify" in text
    assert main(["manifest", str(tmp_path), "--verify"]) == 1  # damage found: exit status 1
    text = capsys.readouterr().out
    assert "CorruptRecordError" in text and "1 unreadable or empty" in text
    assert "verified" in text and "not verified" not in text
    assert read_manifest(tmp_path / "manifest.json")["s.tfrecords"]["total"] == 0


def test_manifest_command_says_when_it_could_not_save(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tilestream.tfrecord import TFRecordWriter, serialized_record

    with TFRecordWriter(tmp_path / "s.tfrecords") as w:
        w.write(serialized_record("s", b"tile", 0, 0))
    out = tmp_path / "no" / "such" / "folder" / "manifest.json"
    assert main(["manifest", str(tmp_path), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "cannot write" in text and "counts not saved" in text and not out.exists()
