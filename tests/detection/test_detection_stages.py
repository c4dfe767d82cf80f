"""The conversion's named stages, each alone, and the typed options of ``convert_<format>``."""

from __future__ import annotations

import importlib
import inspect
import threading
import typing
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tilestream.detection import (
    AnnotationSet,
    ConvertOptions,
    ImageAnnotation,
    ObjectAnnotation,
    Problem,
    convert,
    convert_coco,
    convert_csv,
    convert_voc,
    convert_yolo,
)
from tilestream.detection.images import ImageBytes
from tilestream.errors import AnnotationError, ConfigError

conv = importlib.import_module("tilestream.detection.convert")
pipe = importlib.import_module("tilestream.detection._pipeline")


# --------------------------------------------------------------------------- options


@pytest.mark.parametrize("call", [convert_voc, convert_coco, convert_csv, convert_yolo])
def test_a_misspelt_option_is_a_config_error_before_anything_is_read(
    call: Any, tmp_path: Path
) -> None:
    # the annotations do not exist: the option names are checked first
    with pytest.raises(
        ConfigError, match=r"unknown conversion option 'shard' \(did you mean 'shards'"
    ):
        call(tmp_path / "missing", tmp_path / "out", shard=2)
    with pytest.raises(ConfigError, match="unknown conversion option 'colour'; options: label_map"):
        call(tmp_path / "missing", tmp_path / "out", colour="red")
    assert not (tmp_path / "out").exists()


def test_convert_options_are_exactly_the_keywords_of_convert() -> None:
    params = inspect.signature(convert).parameters
    hints = typing.get_type_hints(convert)
    keywords = {n: hints[n] for n, p in params.items() if p.kind is p.KEYWORD_ONLY}
    assert typing.get_type_hints(ConvertOptions) == keywords  # same names, same types


def test_bad_executor_is_refused_before_the_output_folder_is_made(tmp_path: Path) -> None:
    source = AnnotationSet("csv", [])
    with pytest.raises(ConfigError, match="executor"):
        convert(source, tmp_path / "out", executor="gpu")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- planning


def test_claim_out_dir_refuses_outputs_and_other_records_not_temp_files(tmp_path: Path) -> None:
    names = {"train": ["train.tfrecord"]}
    out = tmp_path / "out"
    conv._claim_out_dir(out, names, overwrite=False)  # creates it
    assert out.is_dir()
    (out / ".train.tfrecord.0123456789ab.tmp").write_bytes(b"")  # a temp file of a dead run
    conv._claim_out_dir(out, names, overwrite=False)
    (out / "old.tfrecord-00000-of-00002").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"already holds old\.tfrecord-00000-of-00002"):
        conv._claim_out_dir(out, names, overwrite=False)
    (out / "summary.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"summary\.json, old\.tfrecord"):
        conv._claim_out_dir(out, names, overwrite=False)
    conv._claim_out_dir(out, names, overwrite=True)


def test_parse_problem_index_maps_problems_to_image_numbers() -> None:
    images = [ImageAnnotation(n, n, source="l.csv") for n in ("a.jpg", "b.jpg", "a.jpg")]
    problems = [
        Problem("bad_box", "l.csv:2", "x", image="a.jpg", object=1),
        Problem("malformed_annotation", "l.csv:3", "y", image="b.jpg"),
        Problem("malformed_annotation", "l.csv:9", "row"),  # no image: names none
    ]
    reported, image_problems = conv._parse_problem_index(AnnotationSet("csv", images, problems))
    assert reported == {0: {1}, 2: {1}}
    assert image_problems == {0, 1, 2}


def test_duplicates_keep_the_first_of_each_file(tmp_path: Path) -> None:
    images = [
        ImageAnnotation("a.jpg", tmp_path / "a.jpg", source="1.xml"),
        ImageAnnotation("b.jpg", tmp_path / "b.jpg", source="2.xml"),
        ImageAnnotation("a.jpg", tmp_path / "x" / ".." / "a.jpg", source="3.xml"),
    ]
    keep, problems = conv._duplicates(AnnotationSet("voc", images))
    assert keep == [0, 1]
    assert [(p.kind, p.file, p.message) for p in problems] == [
        ("duplicate_file", "3.xml", "image a.jpg is also annotated by 1.xml")
    ]


# --------------------------------------------------------------------------- per image


def test_load_names_missing_unreadable_and_not_image_files(tmp_path: Path) -> None:
    (tmp_path / "x.jpg").write_bytes(b"not an image at all")
    Image.new("RGB", (7, 5)).save(tmp_path / "ok.png")
    kinds = {}
    for name in ("none.jpg", "x.jpg", "."):
        got = pipe._load(ImageAnnotation(name, tmp_path / name, source="s"), False, None, 0, 0)
        assert isinstance(got, Problem)
        kinds[name] = got.kind
    assert kinds == {
        "none.jpg": "missing_image",
        "x.jpg": "unreadable_image",
        ".": "unreadable_image",  # a folder
    }
    img, start = pipe._load(
        ImageAnnotation("ok.png", tmp_path / "ok.png", source="s"), False, None, 0, 0
    )
    assert (img.format, img.width, img.height, start) == ("png", 7, 5, -1)
    buffer = pipe._RecordBuffer(64)
    img, start = pipe._load(
        ImageAnnotation("ok.png", tmp_path / "ok.png", source="s"), False, buffer, 16, 8
    )
    assert (
        start == 16
        and bytes(buffer.view[16 : 16 + len(img.data)]) == (tmp_path / "ok.png").read_bytes()
    )


def test_frame_is_the_stated_size_or_one_when_normalised() -> None:
    real = ImageBytes(b"", "png", 10, 8, reencoded=False)
    same = ImageAnnotation("a.png", "a.png", source="s", width=10, height=8)
    assert pipe._frame(same, real) == (10.0, 8.0, [])
    other = ImageAnnotation("a.png", "a.png", source="s", width=20, height=16)
    width, height, problems = pipe._frame(other, real)
    assert (width, height) == (20.0, 16.0)
    assert [p.kind for p in problems] == ["size_mismatch"]
    assert "says 20x16, the image a.png is 10x8" in problems[0].message
    unstated = ImageAnnotation("a.png", "a.png", source="s", normalized=True)
    assert pipe._frame(unstated, real) == (1.0, 1.0, [])


def test_format_features_per_source_format() -> None:
    objs = [ObjectAnnotation(0, 0, 2, 3, "c", difficult=True, view="left", is_crowd=True)]
    assert sorted(pipe._format_features("voc", objs)) == [
        "image/object/difficult",
        "image/object/truncated",
        "image/object/view",
    ]
    coco = pipe._format_features("coco", objs)
    assert list(coco["image/object/area"].value) == [6.0]  # no area given: the box's
    assert list(coco["image/object/is_crowd"].value) == [1]
    assert pipe._format_features("csv", objs) == {}


def test_mask_feature_or_the_problem_of_the_object_without_one() -> None:
    img = ImageBytes(b"", "png", 4, 4, reencoded=False)
    square = [[0, 0, 2, 0, 2, 2, 0, 2]]
    image = ImageAnnotation(
        "a.png",
        "a.png",
        source="i.json",
        objects=[
            ObjectAnnotation(0, 0, 2, 2, "c", segmentation=square),
            ObjectAnnotation(0, 0, 2, 2, "d"),
        ],
    )
    masks = pipe._mask_feature(image, [0], img)
    assert not isinstance(masks, Problem) and len(masks.value) == 1
    problem = pipe._mask_feature(image, [0, 1], img)
    assert isinstance(problem, Problem)
    assert (problem.kind, problem.object, problem.label) == ("malformed_annotation", 1, "d")


def test_assemble_in_place_when_it_fits_else_joined() -> None:
    buffer = pipe._RecordBuffer(32)
    buffer.view[10:14] = b"DATA"
    data = buffer.view[10:14]
    record = pipe._assemble(buffer, 10, data, b"HEAD", b"TL", 8, 4)
    assert isinstance(record, memoryview) and bytes(record) == b"HEADDATATL"
    too_long = pipe._assemble(buffer, 10, data, b"HEAD" * 3, b"TL", 8, 4)
    assert isinstance(too_long, bytes) and too_long == b"HEAD" * 3 + b"DATATL"
    assert pipe._assemble(None, -1, b"DATA", b"H", b"T", 8, 4) == b"HDATAT"


# --------------------------------------------------------------------------- in order


class _Recording(pipe._Stage):  # type: ignore[name-defined,misc]
    """A stage whose chunks are numbers; it records what finishes, in which order."""

    def __init__(self, pool: ThreadPoolExecutor, fail_at: int = -1) -> None:
        super().__init__(None, None, pool)
        self.finished: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.stopped = False
        self.fail_at = fail_at
        self.lock = threading.Lock()

    def submit(self, seq: int, split_name: str, items: list) -> Future[Any]:
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        return self.pool.submit(lambda: seq)

    def finish(self, split_name: str, future: Future[Any]) -> None:
        seq = future.result()
        with self.lock:
            self.in_flight -= 1
        if seq == self.fail_at:
            raise RuntimeError(f"chunk {seq} failed")
        self.finished.append(f"{split_name}{seq}")

    def stop(self) -> None:
        self.stopped = True


def test_in_order_finishes_every_chunk_in_order_within_the_window() -> None:
    chunks = iter([("train", []), ("train", []), ("valid", []), ("valid", []), ("test", [])])
    with _Recording(ThreadPoolExecutor(2)) as stage:
        pipe._in_order(stage, chunks, 2)
    assert stage.finished == ["train0", "train1", "valid2", "valid3", "test4"]
    assert stage.most_in_flight == 2 and not stage.stopped


def test_in_order_stops_the_stage_on_an_error() -> None:
    chunks = iter([("train", [])] * 6)
    stage = _Recording(ThreadPoolExecutor(2), fail_at=1)
    with stage, pytest.raises(RuntimeError, match="chunk 1 failed"):
        pipe._in_order(stage, chunks, 3)
    assert stage.finished == ["train0"] and stage.stopped


# --------------------------------------------------------------------------- back to COCO

to_coco = importlib.import_module("tilestream.detection.to_coco")


def test_name_of_a_label_is_fixed_by_its_first_text() -> None:
    names: dict[int, str] = {}
    to_coco._name(names, 3, "", "a.tfrecord", 0)
    to_coco._name(names, 3, "cat", "a.tfrecord", 1)  # an empty name is filled in
    to_coco._name(names, 3, "cat", "a.tfrecord", 2)
    to_coco._name(names, 3, "", "a.tfrecord", 3)  # no text: no conflict
    assert names == {3: "cat"}
    with pytest.raises(AnnotationError, match="record 4: label 3 is 'dog' here but 'cat' earlier"):
        to_coco._name(names, 3, "dog", "a.tfrecord", 4)


def test_source_ids_become_image_ids_only_when_distinct_integers() -> None:
    def run(source_ids: list[str]) -> tuple[list[int], list[int]]:
        images = [{"id": n + 1, "_source_id": s} for n, s in enumerate(source_ids)]
        anns = [{"image_id": n + 1} for n in range(len(source_ids))]
        to_coco._ids_from_source_ids(images, anns)
        assert all("_source_id" not in img for img in images)
        return [img["id"] for img in images], [a["image_id"] for a in anns]

    assert run(["70", "9"]) == ([70, 9], [70, 9])
    assert run(["70", "70"]) == ([1, 2], [1, 2])
    assert run(["70", "a.jpg"]) == ([1, 2], [1, 2])


def test_categories_declared_first_then_those_only_records_name() -> None:
    from tilestream.detection import LabelMap, LabelMapItem

    names = {5: "zebra", 1: "cat"}
    assert [c["id"] for c in to_coco._categories(names, None)] == [1, 5]
    lm = LabelMap([LabelMapItem(2, "dog"), LabelMapItem(1, "cat")])
    assert [(c["id"], c["name"]) for c in to_coco._categories(names, lm)] == [
        (2, "dog"),
        (1, "cat"),
        (5, "zebra"),
    ]


# --------------------------------------------------------------------------- readers

csv_format = importlib.import_module("tilestream.detection.csv_format")
coco = importlib.import_module("tilestream.detection.coco")
parse = importlib.import_module("tilestream.detection._parse")


def test_csv_columns_any_order_extra_ignored_missing_named(tmp_path: Path) -> None:
    pick, ncols = csv_format._columns(
        ["note", "ymax", "xmax", "ymin", "xmin", "Class", "height", "width", "filename"],
        tmp_path / "l.csv",
    )
    assert ncols == 9
    assert pick(["n", "9", "8", "7", "6", "c", "5", "4", "a.jpg"]) == (
        "a.jpg", "4", "5", "c", "6", "7", "8", "9",
    )  # fmt: skip
    with pytest.raises(AnnotationError, match="lacks column\\(s\\) width, height"):
        csv_format._columns(["filename", "class", "xmin", "ymin", "xmax", "ymax"], tmp_path)
    with pytest.raises(AnnotationError, match="empty"):
        csv_format._columns([" ", ""], tmp_path)


def test_csv_odd_rows_blank_short_or_nameless() -> None:
    assert csv_format._odd_row(["", " "], False, 8, "l.csv:3") == []
    assert csv_format._odd_row([], True, 8, "l.csv:3") == []
    [short] = csv_format._odd_row(["a.jpg", "4"], True, 8, "l.csv:3")
    assert (short.file, short.message) == ("l.csv:3", "row has 2 fields, the header has 8")
    [nameless] = csv_format._odd_row([""] * 7 + ["1"], False, 8, "l.csv:4")
    assert nameless.message == "empty filename"


def test_coco_annotation_with_a_problem_keeps_its_place(tmp_path: Path) -> None:
    images = {7: ImageAnnotation("a.jpg", "a.jpg", source="i.json")}
    problems: list[Problem] = []
    add = coco._add_annotation
    add(
        0,
        {"id": 1, "image_id": 7, "category_id": 4, "bbox": [1, 2, 3, 4]},
        images,
        {4: "cat"},
        "i.json",
        problems,
    )
    add(
        1,
        {"id": 2, "image_id": 7, "category_id": 9, "bbox": [1, 2, True, 4]},
        images,
        {4: "cat"},
        "i.json",
        problems,
    )
    add(2, {"id": 3, "image_id": 8, "category_id": 4}, images, {4: "cat"}, "i.json", problems)
    add(3, "junk", images, {4: "cat"}, "i.json", problems)
    objs = images[7].objects
    assert [(o.label, o.xmax, o.ymax) for o in objs[:1]] == [("cat", 4.0, 6.0)]
    assert objs[1].label == "" and objs[1].xmin != objs[1].xmin  # NaN box, no class
    assert [(p.kind, p.object) for p in problems] == [
        ("unknown_class", 1),
        ("bad_box", 1),
        ("malformed_annotation", None),
        ("malformed_annotation", None),
    ]


def test_read_utf8_names_the_missing_or_unreadable_file(tmp_path: Path) -> None:
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbfcat\n")
    (tmp_path / "latin.txt").write_bytes(b"caf\xe9\n")
    kw = {"missing": "classes file not found", "unreadable": "cannot read classes file"}
    assert parse.read_utf8(tmp_path / "bom.txt", **kw) == "cat\n"
    with pytest.raises(AnnotationError, match="classes file not found") as missing:
        parse.read_utf8(tmp_path / "none.txt", **kw)
    assert "none.txt" in str(missing.value)
    with pytest.raises(AnnotationError, match="cannot read classes file: 'utf-8' codec"):
        parse.read_utf8(tmp_path / "latin.txt", **kw)
