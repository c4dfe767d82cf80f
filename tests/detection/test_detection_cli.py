"""``tilestream convert ...`` through the real CLI entry point, on the real data sets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tilestream.cli import main
from tilestream.tfrecord import decode_example, iter_records

pytestmark = pytest.mark.testdata


def test_convert_voc_cli(
    detection_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    voc = detection_dir / "VOCdevkit" / "VOC2007"
    lm = detection_dir / "label_maps" / "pascal_label_map.pbtxt"
    out = tmp_path / "out"
    code = main(
        [
            "convert",
            "voc",
            str(voc),
            "--out",
            str(out),
            "--label-map",
            str(lm),
            "--split",
            "0.6,0.2,0.2",
            "--shards",
            "2",
            "--seed",
            "1",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "train" in printed
    assert "valid" in printed
    assert "5 images" in printed
    files = sorted(p.name for p in out.iterdir())
    assert "train.tfrecord-00001-of-00002" in files
    assert "label_map.pbtxt" in files
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 5
    assert [summary["splits"][k]["images"] for k in ("train", "valid", "test")] == [3, 1, 1]
    # an existing output is not replaced silently
    assert main(["convert", "voc", str(voc), "--out", str(out)]) == 1
    assert "already holds" in capsys.readouterr().err


def test_convert_csv_and_back_to_coco_cli(
    detection_dir: Path, tfrecords_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rac = detection_dir / "raccoon"
    out = tmp_path / "rac"
    code = main(
        [
            "convert",
            "csv",
            str(rac / "test_labels.csv"),
            "--images",
            str(rac / "test_images"),
            "--out",
            str(out),
            "--jpeg-format",
            "jpg",
            "--no-shuffle",
        ]
    )
    assert code == 0
    recs = [decode_example(r) for r in iter_records(out / "train.tfrecord")]
    assert len(recs) == 40
    assert recs[0]["image/format"].value == [b"jpg"]
    assert main(["convert", "tfrecord-to-coco", str(out), "--out", str(tmp_path / "c.json")]) == 0
    coco = json.loads((tmp_path / "c.json").read_text())
    assert len(coco["images"]) == 40
    assert len(coco["annotations"]) == 44
    assert coco["categories"] == [{"id": 1, "name": "raccoon", "supercategory": ""}]
    # the tutorial's own record converts back the same way
    ref = tmp_path / "ref.json"
    assert (
        main(
            [
                "convert",
                "tfrecord-to-coco",
                str(tfrecords_dir / "raccoon_test.record"),
                "--out",
                str(ref),
            ]
        )
        == 0
    )
    ref_coco = json.loads(ref.read_text())
    ours = {i["file_name"]: i for i in coco["images"]}
    for img in ref_coco["images"]:
        assert (ours[img["file_name"]]["width"], ours[img["file_name"]]["height"]) == (
            img["width"],
            img["height"],
        )
    capsys.readouterr()


def test_convert_coco_cli_masks_and_errors(
    detection_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    coco = detection_dir / "coco_datumaro"
    out = tmp_path / "coco"
    code = main(
        [
            "convert",
            "coco",
            str(coco / "annotations" / "instances_val.json"),
            "--images",
            str(coco / "images" / "val"),
            "--out",
            str(out),
            "--masks",
            "--keep-category-ids",
        ]
    )
    assert code == 0
    (rec,) = [decode_example(r) for r in iter_records(out / "train.tfrecord")]
    assert len(rec["image/object/mask"].value) == 2
    assert rec["image/object/class/label"].value.tolist() == [1, 2]
    # wrong images folder: every missing image reported, one line per problem, exit 1
    code = main(
        [
            "convert",
            "coco",
            str(coco / "annotations" / "instances_val.json"),
            "--images",
            str(coco / "images" / "train"),
            "--out",
            str(tmp_path / "bad"),
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "missing_image" in err
    assert "b.jpg" in err
    assert not (tmp_path / "bad").exists() or not list((tmp_path / "bad").iterdir())


def test_convert_yolo_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    Image.new("RGB", (10, 10)).save(tmp_path / "a.png")
    (tmp_path / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "obj.names").write_text("thing\n")
    assert main(["convert", "yolo", str(tmp_path), "--out", str(tmp_path / "o")]) == 0
    assert "thing" in capsys.readouterr().out
