"""Converting the real VOC, CSV and COCO sets; every value checked through TensorFlow.

TensorFlow parses our records with the OD API feature spec (FixedLen image
keys, VarLen object keys) and the values are compared with what the
annotation files and image files say, read independently here.
"""

from __future__ import annotations

import hashlib
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tilestream.detection import (
    annotation_mask,
    convert_coco,
    convert_csv,
    convert_voc,
    convert_yolo,
    decode_rle,
    feature_spec,
    read_label_map,
    tfrecords_to_coco,
    write_coco,
)

pytestmark = [pytest.mark.testdata, pytest.mark.tensorflow]


def parse_with_tf(tf: ModuleType, files: list[Path], spec: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for raw in tf.data.TFRecordDataset([str(f) for f in files]):
        parsed = tf.io.parse_single_example(raw, spec)
        rec: dict[str, Any] = {}
        for key, value in parsed.items():
            if isinstance(value, tf.sparse.SparseTensor):
                rec[key] = value.values.numpy()
            else:
                rec[key] = value.numpy()
        out.append(rec)
    return out


def by_filename(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["image/filename"].decode(): r for r in records}


def f32(values: list[float]) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).astype(np.float32)


def test_voc2007_every_value(tf: ModuleType, detection_dir: Path, tmp_path: Path) -> None:
    voc = detection_dir / "VOCdevkit" / "VOC2007"
    lm_path = detection_dir / "label_maps" / "pascal_label_map.pbtxt"
    summary = convert_voc(voc, tmp_path / "out", label_map=lm_path, image_set="trainval")
    lm = read_label_map(lm_path)
    records = by_filename(
        parse_with_tf(
            tf, [tmp_path / "out" / "train.tfrecord"], feature_spec(tf, source_format="voc")
        )
    )
    assert sorted(records) == [f"00000{i}.jpg" for i in range(1, 6)]
    total_objects = 0
    for xml in sorted((voc / "Annotations").glob("*.xml")):
        root = ET.parse(xml).getroot()
        name = root.findtext("filename")
        assert name is not None
        rec = records[name]
        jpeg = (voc / "JPEGImages" / name).read_bytes()
        w = int(root.findtext("size/width") or 0)
        h = int(root.findtext("size/height") or 0)
        assert Image.open(io.BytesIO(jpeg)).size == (w, h)
        assert rec["image/width"] == w
        assert rec["image/height"] == h
        assert rec["image/source_id"] == name.encode()
        assert rec["image/encoded"] == jpeg  # copied, not re-encoded
        assert rec["image/key/sha256"] == hashlib.sha256(jpeg).hexdigest().encode()
        assert rec["image/format"] == b"jpeg"
        objs = root.findall("object")
        total_objects += len(objs)
        for key, tag, scale in (
            ("xmin", "xmin", w),
            ("xmax", "xmax", w),
            ("ymin", "ymin", h),
            ("ymax", "ymax", h),
        ):
            expect = f32([float(o.findtext(f"bndbox/{tag}") or 0) / scale for o in objs])
            np.testing.assert_array_equal(rec[f"image/object/bbox/{key}"], expect)
        names = [o.findtext("name") or "" for o in objs]
        assert rec["image/object/class/text"].tolist() == [n.encode() for n in names]
        assert rec["image/object/class/label"].tolist() == [lm.id_of(n) for n in names]
        for key in ("difficult", "truncated"):
            assert rec[f"image/object/{key}"].tolist() == [int(o.findtext(key) or 0) for o in objs]
        assert rec["image/object/view"].tolist() == [
            (o.findtext("pose") or "").encode() for o in objs
        ]
    # the difficult chairs of 000005 (two in the XML; SOURCES.md says one) and
    # the truncated dog and person of 000001
    assert records["000005.jpg"]["image/object/difficult"].tolist() == [0, 0, 1, 0, 1]
    assert records["000001.jpg"]["image/object/truncated"].tolist() == [1, 1]
    assert summary.splits["train"].objects == total_objects == 17
    assert summary.splits["train"].classes["car"] == 7
    # the label map written is the one given
    assert read_label_map(tmp_path / "out" / "label_map.pbtxt") == lm


def test_raccoon_csv_reproduces_the_tutorial_record(
    tf: ModuleType, detection_dir: Path, tfrecords_dir: Path, tmp_path: Path
) -> None:
    rac = detection_dir / "raccoon"
    convert_csv(
        rac / "test_labels.csv",
        tmp_path / "jpg",
        images_dir=rac / "test_images",
        label_map=rac / "object-detection.pbtxt",
        jpeg_format="jpg",
    )
    spec = feature_spec(tf, source_format="csv")
    ours = by_filename(parse_with_tf(tf, [tmp_path / "jpg" / "train.tfrecord"], spec))
    ref_spec = {k: v for k, v in spec.items() if k != "image/key/sha256"}
    ref = by_filename(parse_with_tf(tf, [tfrecords_dir / "raccoon_test.record"], ref_spec))
    assert len(ref) == 40
    assert sorted(ours) == sorted(ref)
    for name, expected in ref.items():
        got = ours[name]
        for key, value in expected.items():
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(got[key], value, err_msg=f"{name} {key}")
            else:
                assert got[key] == value, (name, key)
        assert (
            got["image/key/sha256"]
            == hashlib.sha256(expected["image/encoded"]).hexdigest().encode()
        )
    # the default is the OD API's own value, 'jpeg'
    convert_csv(rac / "test_labels.csv", tmp_path / "jpeg", images_dir=rac / "test_images")
    default = parse_with_tf(tf, [tmp_path / "jpeg" / "train.tfrecord"], spec)
    assert {r["image/format"] for r in default} == {b"jpeg"}
    assert {r["image/format"] for r in ref.values()} == {b"jpg"}


def test_raccoon_voc_xml(tf: ModuleType, detection_dir: Path, tmp_path: Path) -> None:
    convert_voc(detection_dir / "raccoon", tmp_path / "out")
    recs = by_filename(
        parse_with_tf(
            tf, [tmp_path / "out" / "train.tfrecord"], feature_spec(tf, source_format="voc")
        )
    )
    r1 = recs["raccoon-1.jpg"]
    assert (r1["image/width"], r1["image/height"]) == (650, 417)
    np.testing.assert_array_equal(r1["image/object/bbox/xmin"], f32([81 / 650]))
    np.testing.assert_array_equal(r1["image/object/bbox/ymax"], f32([408 / 417]))
    assert r1["image/object/class/label"].tolist() == [1]
    assert (
        r1["image/encoded"] == (detection_dir / "raccoon" / "images" / "raccoon-1.jpg").read_bytes()
    )


def _coco_expect(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def test_coco_with_masks(tf: ModuleType, detection_dir: Path, tmp_path: Path) -> None:
    coco = detection_dir / "coco_datumaro"
    summary = convert_coco(
        coco / "annotations" / "instances_val.json",
        tmp_path / "val",
        images_dir=coco / "images" / "val",
        include_masks=True,
    )
    # no label map given: the declared categories by name, ids 1..n
    assert summary.label_map.to_dict() == {"a": 1, "b": 2, "c": 3}
    spec = feature_spec(tf, source_format="coco", masks=True)
    (rec,) = parse_with_tf(tf, [tmp_path / "val" / "train.tfrecord"], spec)
    jpeg = (coco / "images" / "val" / "b.jpg").read_bytes()
    assert rec["image/encoded"] == jpeg
    assert rec["image/format"] == b"jpeg"
    assert (rec["image/width"], rec["image/height"]) == (5, 10)
    assert rec["image/source_id"] == b"40"
    assert rec["image/filename"] == b"b.jpg"
    assert rec["image/object/class/text"].tolist() == [b"a", b"b"]
    assert rec["image/object/class/label"].tolist() == [1, 2]
    assert rec["image/object/is_crowd"].tolist() == [0, 1]
    np.testing.assert_array_equal(rec["image/object/area"], f32([2.0, 20.0]))
    np.testing.assert_array_equal(rec["image/object/bbox/xmin"], f32([0.0, 0.0]))
    np.testing.assert_array_equal(rec["image/object/bbox/xmax"], f32([1 / 5, 1 / 5]))
    np.testing.assert_array_equal(rec["image/object/bbox/ymax"], f32([2 / 10, 9 / 10]))
    masks = [np.asarray(Image.open(io.BytesIO(m))) for m in rec["image/object/mask"]]
    assert all(m.shape == (10, 5) and m.dtype == np.uint8 for m in masks)
    # polygon [0,0 1,0 1,2 0,2]: the two pixels (0,0), (0,1) as its area 2 says
    expected_poly = np.zeros((10, 5), np.uint8)
    expected_poly[0:2, 0] = 1
    np.testing.assert_array_equal(masks[0], expected_poly)
    # uncompressed RLE counts [0, 20, 30], column-major: the first two columns
    expected_rle = np.zeros((10, 5), np.uint8)
    expected_rle[:, :2] = 1
    np.testing.assert_array_equal(masks[1], expected_rle)
    # the same masks decoded by TensorFlow
    tf_mask = tf.io.decode_png(rec["image/object/mask"][1]).numpy()[:, :, 0]
    np.testing.assert_array_equal(tf_mask, expected_rle)


def test_coco_keep_category_ids(tf: ModuleType, detection_dir: Path, tmp_path: Path) -> None:
    coco = detection_dir / "coco_datumaro"
    summary = convert_coco(
        coco / "annotations" / "instances_val.json",
        tmp_path / "val",
        images_dir=coco / "images" / "val",
        keep_category_ids=True,
    )
    assert summary.label_map.to_dict() == {"a": 1, "b": 2, "c": 4}
    (rec,) = parse_with_tf(
        tf, [tmp_path / "val" / "train.tfrecord"], feature_spec(tf, source_format="coco")
    )
    assert rec["image/object/class/label"].tolist() == [1, 2]


@pytest.mark.parametrize("keep_ids", [False, True])
def test_coco_tfrecord_coco_round_trip(detection_dir: Path, tmp_path: Path, keep_ids: bool) -> None:
    coco = detection_dir / "coco_datumaro"
    for part in ("train", "val"):
        convert_coco(
            coco / "annotations" / f"instances_{part}.json",
            tmp_path / part,
            images_dir=coco / "images" / part,
            include_masks=part == "val",
            keep_category_ids=keep_ids,
        )
    for part in ("train", "val"):
        original = _coco_expect(coco / "annotations" / f"instances_{part}.json")
        back = write_coco(
            [tmp_path / part / "train.tfrecord"],
            tmp_path / f"{part}.json",
            label_map=tmp_path / part / "label_map.pbtxt",
        )
        assert json.loads((tmp_path / f"{part}.json").read_text()) == back
        # categories: same names (and ids when kept)
        orig_cats = {c["name"]: c["id"] for c in original["categories"]}
        back_cats = {c["name"]: c["id"] for c in back["categories"]}
        assert set(back_cats) == set(orig_cats)
        if keep_ids:
            assert back_cats == orig_cats
        # images: same ids (source_id), names and sizes
        strip = [
            {k: i[k] for k in ("id", "file_name", "width", "height")} for i in original["images"]
        ]
        assert back["images"] == strip
        orig_names = {c["id"]: c["name"] for c in original["categories"]}
        back_names = {c["id"]: c["name"] for c in back["categories"]}
        assert len(back["annotations"]) == len(original["annotations"])
        for a, b in zip(original["annotations"], back["annotations"], strict=False):
            assert b["image_id"] == a["image_id"]
            assert back_names[b["category_id"]] == orig_names[a["category_id"]]
            np.testing.assert_allclose(b["bbox"], a["bbox"], atol=1e-5)
            assert b["iscrowd"] == a["iscrowd"]
            assert b["area"] == pytest.approx(a["area"])
            if part == "val":  # masks were written: they come back as RLE
                img = back["images"][0]
                expected = annotation_mask(
                    a["segmentation"], height=img["height"], width=img["width"]
                )
                np.testing.assert_array_equal(decode_rle(b["segmentation"]), expected)


def test_datumaro_tfrecords_to_coco(tfrecords_dir: Path) -> None:
    d = tfrecords_dir / "datumaro_tf_detection_api_dataset"
    coco = tfrecords_to_coco(
        [d / "train.tfrecord", d / "val.tfrecord", d / "test.tfrecord"],
        label_map=d / "label_map.pbtxt",
    )
    assert [i["file_name"] for i in coco["images"]] == ["1.jpg", "2.jpg", "3.jpg"]
    assert [(i["width"], i["height"]) for i in coco["images"]] == [(16, 16), (8, 8), (4, 5)]
    # train's third object has label 0 and no text (no class): left out
    assert [a["category_id"] for a in coco["annotations"]] == [3, 4, 4]
    assert coco["annotations"][0]["bbox"] == [0.0, 4.0, 4.0, 8.0]
    assert [c["id"] for c in coco["categories"]] == list(range(1, 11))


def test_reencode_non_jpeg_png_to_png(tf: ModuleType, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (12, 20, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.bmp")
    Image.fromarray(pixels).save(tmp_path / "b.png")
    (tmp_path / "l.csv").write_text(
        "filename,width,height,class,xmin,ymin,xmax,ymax\na.bmp,20,12,x,1,1,5,5\n"
        "b.png,20,12,x,2,2,6,6\n"
    )
    summary = convert_csv(tmp_path / "l.csv", tmp_path / "out")
    assert summary.reencoded_images == 1
    recs = by_filename(
        parse_with_tf(
            tf, [tmp_path / "out" / "train.tfrecord"], feature_spec(tf, source_format="csv")
        )
    )
    assert recs["a.bmp"]["image/format"] == b"png"
    assert recs["b.png"]["image/format"] == b"png"
    assert recs["b.png"]["image/encoded"] == (tmp_path / "b.png").read_bytes()
    for rec in recs.values():
        decoded = tf.io.decode_image(rec["image/encoded"]).numpy()
        np.testing.assert_array_equal(decoded, pixels)


def test_vocdevkit_root_is_entered(detection_dir: Path, tmp_path: Path) -> None:
    a = convert_voc(detection_dir / "VOCdevkit", tmp_path / "a", image_set="trainval")
    b = convert_voc(detection_dir / "VOCdevkit" / "VOC2007", tmp_path / "b")
    assert a.images == b.images == 5
    assert (tmp_path / "a" / "train.tfrecord").read_bytes() == (
        tmp_path / "b" / "train.tfrecord"
    ).read_bytes()


def test_yolo_from_the_raccoon_csv_gives_the_same_records(
    detection_dir: Path, tmp_path: Path
) -> None:
    # The 40 real raccoon images, labelled in YOLO form from the CSV: same boxes
    # (to float32 rounding), labels and image bytes as the CSV conversion.
    import csv

    from tilestream.tfrecord import decode_example, iter_records

    rac = detection_dir / "raccoon"
    yolo = tmp_path / "yolo"
    (yolo / "images").mkdir(parents=True)
    (yolo / "labels").mkdir()
    (yolo / "classes.txt").write_text("raccoon\n")
    with open(rac / "test_labels.csv", newline="") as f:
        for row in csv.DictReader(f):
            w, h = int(row["width"]), int(row["height"])
            x0, y0, x1, y1 = (int(row[k]) for k in ("xmin", "ymin", "xmax", "ymax"))
            img = yolo / "images" / row["filename"]
            if not img.exists():
                img.symlink_to(rac / "test_images" / row["filename"])
            with open((yolo / "labels" / row["filename"]).with_suffix(".txt"), "a") as out:
                out.write(
                    f"0 {(x0 + x1) / 2 / w} {(y0 + y1) / 2 / h} {(x1 - x0) / w} {(y1 - y0) / h}\n"
                )
    convert_yolo(yolo, tmp_path / "from_yolo")
    convert_csv(rac / "test_labels.csv", tmp_path / "from_csv", images_dir=rac / "test_images")

    def load(path: Path) -> dict[bytes, dict]:
        return {
            ex["image/filename"].value[0]: ex
            for ex in (decode_example(r) for r in iter_records(path))
        }

    a, b = (
        load(tmp_path / "from_yolo" / "train.tfrecord"),
        load(tmp_path / "from_csv" / "train.tfrecord"),
    )
    assert sorted(a) == sorted(b) and len(a) == 40
    for name, ex in b.items():
        other = a[name]
        for key in ("image/encoded", "image/key/sha256", "image/object/class/text"):
            assert other[key].value == ex[key].value
        for key in ("image/width", "image/height", "image/object/class/label"):
            np.testing.assert_array_equal(other[key].value, ex[key].value)
        for side in ("xmin", "xmax", "ymin", "ymax"):
            np.testing.assert_allclose(
                other[f"image/object/bbox/{side}"].value,
                ex[f"image/object/bbox/{side}"].value,
                atol=1e-6,
            )
