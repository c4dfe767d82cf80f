"""The Dataset on real extracted TFRecords: selection, problems reported, loaders."""

from __future__ import annotations

import logging
import pickle
import shutil
from pathlib import Path

import pytest

from tilestream.dataset import Dataset
from tilestream.errors import AnnotationError, ConfigError
from tilestream.tfrecord import find_index, get_tfrecord_length

pytestmark = pytest.mark.testdata

ANN = [
    {"slide": "slideA", "patient": "p1", "label": "tumor", "site": "X", "score": "0.5"},
    {"slide": "slideB", "patient": "p1", "label": "normal", "site": "X", "score": "1.5"},
    {"slide": "slideC", "patient": "p2", "label": "tumor", "site": "Y", "score": ""},
    {"slide": "slideD", "patient": "p3", "label": "normal", "site": "Y", "score": "2"},
]


@pytest.fixture
def work(real_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the real TFRecords (tests may add bad files to it)."""
    d = tmp_path / "tfr" / "64px_128um"
    d.mkdir(parents=True)
    for f in real_dir.glob("slide*.tfrecords"):
        shutil.copy(f, d / f.name)
    return tmp_path / "tfr"


def _n(real_dir: Path, name: str) -> int:
    return get_tfrecord_length(real_dir / f"{name}.tfrecords")


def test_selection_counts_and_problems(
    work: Path, real_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ds = Dataset(tfrecords=work, annotations=ANN[:2] + ANN[3:], tile_px=64, tile_um=128)
    n_a, n_b = _n(real_dir, "slideA"), _n(real_dir, "slideB")
    assert ds.slides() == ["slideA", "slideB", "slideD"]
    folder = work / "64px_128um"
    assert ds.tfrecords() == [str(folder / "slideA.tfrecords"), str(folder / "slideB.tfrecords")]
    assert ds.num_tiles == n_a + n_b
    assert ds.manifest()[str(folder / "slideA.tfrecords")] == {"total": n_a, "clipped": n_a}
    assert ds.slides_without_tfrecords() == ["slideD"]
    assert ds.tfrecords_without_annotations() == ["slideC"]
    assert ds.patients() == {"slideA": "p1", "slideB": "p1", "slideD": "p3"}
    summary = ds.summary()
    assert capsys.readouterr().out == ""  # the library prints nothing
    assert (summary.num_slides, summary.num_patients, summary.num_tfrecords) == (3, 2, 2)
    assert summary.num_tiles == n_a + n_b and summary.tile_um == "128um"
    assert summary.slides_without_tfrecords == ["slideD"]
    assert summary.tfrecords_without_annotations == ["slideC"]
    assert summary.annotation_columns == ["slide", "patient", "label", "site", "score"]
    lines: list[str] = []
    ds.summary(print_fn=lines.append)
    assert "Annotated slides without a TFRecord (1): slideD" in lines
    assert any(line.startswith("Tile size: 64px, 128um") for line in lines)
    assert not (folder / "manifest.json").exists()  # reading writes nothing


def test_filters_clip_min_tiles_labels_balance(work: Path, real_dir: Path) -> None:
    ds = Dataset(tfrecords=work / "64px_128um", annotations=ANN)
    n = {c: _n(real_dir, c) for c in ("slideA", "slideB", "slideC")}
    tumor = ds.filter(filters={"label": "tumor"})
    assert tumor.slides() == ["slideA", "slideC"] and ds.slides() == [a["slide"] for a in ANN]
    assert tumor.filter(filters={"site": ["Y"]}).slides() == ["slideC"]
    assert ds.filter(filter_blank=["score"]).slides() == ["slideA", "slideB", "slideD"]
    assert ds.filter(min_tiles=1).slides() == ["slideA", "slideB", "slideC"]  # slideD: no tiles
    assert ds.filter(min_tiles=n["slideA"] + 1).slides() == []
    clipped = ds.clip(5)
    assert clipped.num_tiles == 15 and ds.num_tiles == sum(n.values())
    assert {v["clipped"] for v in clipped.manifest().values()} == {5}
    assert ds.clip({"slideA": 2}).num_tiles == 2 + n["slideB"] + n["slideC"]
    assert ds.labels("label") == (
        {"slideA": 1, "slideB": 0, "slideC": 1, "slideD": 0},
        ["normal", "tumor"],
    )
    assert ds.labels("label", format="name")[0]["slideB"] == "normal"
    with pytest.raises(AnnotationError, match="row 3: slide 'slideC' has an empty 'score'"):
        ds.labels("score", use_float=True)
    assert ds.filter(filter_blank=["score"]).labels("score", use_float=True)[0]["slideD"] == 2.0
    with pytest.raises(AnnotationError, match="missing column 'grade'"):
        ds.filter(filters={"grade": "1"})

    paths = {c: str(work / "64px_128um" / f"{c}.tfrecords") for c in n}
    w = ds.balance(strategy="slide").prob_weights
    assert w == pytest.approx(dict.fromkeys(paths.values(), 1 / 3))
    w = ds.balance(strategy="tile").prob_weights
    assert w == pytest.approx({paths[c]: n[c] / sum(n.values()) for c in n})
    w = ds.balance(strategy="patient").prob_weights  # p1 has two slides, p2 one
    assert w == pytest.approx({paths["slideA"]: 0.25, paths["slideB"]: 0.25, paths["slideC"]: 0.5})
    w = ds.balance("label", strategy="category").prob_weights
    assert w is not None and w[paths["slideB"]] == pytest.approx(0.5)
    assert w[paths["slideA"]] + w[paths["slideC"]] == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="needs headers"):
        ds.balance(strategy="category")


def test_bad_tfrecords_and_missing_sources_are_reported_not_deleted(
    work: Path, tfrecords_dir: Path, tmp_path: Path
) -> None:
    folder = work / "64px_128um"
    shutil.copy(
        tfrecords_dir / "corrupted" / "pets_examples.domj07-corrupted.record",
        folder / "slideE.tfrecords",
    )
    (folder / "slideF.tfrecords").write_bytes(b"")
    ds = Dataset(tfrecords=[folder, tmp_path / "does-not-exist"])
    assert ds.slides() == ["slideA", "slideB", "slideC"]
    bad = ds.unreadable_tfrecords()
    assert set(bad) == {str(folder / "slideE.tfrecords"), str(folder / "slideF.tfrecords")}
    assert "CorruptRecordError" in bad[str(folder / "slideE.tfrecords")]
    assert ds.missing_sources() == [str(tmp_path / "does-not-exist")]
    summary = ds.summary()
    assert summary.missing_sources == [str(tmp_path / "does-not-exist")]
    assert set(summary.unreadable) == set(bad)
    assert (folder / "slideE.tfrecords").exists() and (folder / "slideF.tfrecords").exists()
    # annotated slides whose TFRecord is unreadable are listed but not loaded
    ds2 = Dataset(tfrecords=folder, annotations=[{"slide": "slideA"}, {"slide": "slideE"}])
    assert ds2.slides() == ["slideA", "slideE"] and len(ds2.tfrecords()) == 1
    assert Dataset(tfrecords=tmp_path / "nothing").summary().num_slides == 0


def test_duplicate_slide_names_across_folders(work: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(work / "64px_128um" / "slideA.tfrecords", other / "slideA.tfrecords")
    with pytest.raises(ConfigError, match="two TFRecords for slide 'slideA'") as err:
        Dataset(tfrecords=[work / "64px_128um", other]).slides()
    assert str(other / "slideA.tfrecords") in str(err.value)
    (work / "32px_128um").mkdir()  # a second tile size beside the first
    shutil.copy(other / "slideA.tfrecords", work / "32px_128um" / "slideA.tfrecords")
    with pytest.raises(ConfigError, match="give tile_px and tile_um"):
        Dataset(tfrecords=work).slides()
    assert len(Dataset(tfrecords=work, tile_px=32, tile_um=128).slides()) == 1


def test_annotation_csv_errors_surface(work: Path, tmp_path: Path) -> None:
    csv = tmp_path / "ann.csv"
    csv.write_bytes(b"slide,label\nslideA,ok\nslideB,caf\xe9\n")
    with pytest.raises(AnnotationError, match="line 3: byte 0xe9 is not valid utf-8"):
        Dataset(tfrecords=work, annotations=csv)
    ds = Dataset(tfrecords=work, annotations=csv, encoding="latin-1", tile_px=64, tile_um="128um")
    assert ds.labels("label", format="name")[0] == {"slideA": "ok", "slideB": "café"}
    csv.write_text("slide\nslideA\nslideA\n")
    with pytest.raises(AnnotationError, match="line 3: duplicate slide name 'slideA'"):
        Dataset(tfrecords=work, annotations=csv)


def test_rebuild_index_and_pickle(work: Path) -> None:
    folder = work / "64px_128um"
    for idx in folder.glob("*.index.npz"):
        idx.unlink()  # our own copy in tmp_path
    ds = Dataset(tfrecords=folder)
    assert ds.rebuild_index() == 3
    assert all(find_index(p) is not None for p in ds.tfrecords())
    clone = pickle.loads(pickle.dumps(ds.clip(3)))
    assert clone.num_tiles == 9 and clone.tfrecords() == ds.tfrecords()


def test_extract_tiles_with_the_dataset_tile_size(slide_list: Path, tmp_path: Path) -> None:
    ann = tmp_path / "ann.csv"
    ann.write_text("slide,label\nslideA,a\nslideC,b\n")
    ds = Dataset(
        slides=slide_list, tfrecords=tmp_path / "out", annotations=ann, tile_px=64, tile_um=128
    )
    assert ds.tfrecords() == [] and ds.slides_without_tfrecords() == ["slideA", "slideC"]
    run = ds.extract_tiles(workers=1)
    assert run.done == 2 and run.failed == []
    assert sorted(Path(p).name for p in ds.tfrecords()) == ["slideA.tfrecords", "slideC.tfrecords"]
    assert Path(ds.tfrecords()[0]).parent == tmp_path / "out" / "64px_128um"
    assert ds.num_tiles > 0 and ds.slides_without_tfrecords() == []
    with pytest.raises(ConfigError, match="tile_px and tile_um"):
        Dataset(slides=slide_list, tfrecords=tmp_path / "x").extract_tiles()


@pytest.mark.torch
def test_torch_loader_with_labels_and_clip(torch, work: Path) -> None:  # type: ignore[no-untyped-def]
    ds = Dataset(tfrecords=work, annotations=ANN[:3], tile_px=64, tile_um=128).clip(4)
    tiles = ds.torch(label="label", shuffle=False, incl_slidenames=True)
    loader = torch.utils.data.DataLoader(tiles, batch_size=None, num_workers=2)
    seen = [(slide, int(label)) for image, label, slide in loader]
    assert sorted(seen) == sorted([("slideA", 1)] * 4 + [("slideB", 0)] * 4 + [("slideC", 1)] * 4)
    image = next(iter(tiles))[0]
    assert tuple(image.shape) == (3, 64, 64)
    balanced = ds.balance(strategy="patient")  # p1: slideA + slideB, p2: slideC
    plan = balanced.torch(label="label").plan
    weights = dict(zip(plan.paths, plan.weights.tolist(), strict=True))
    assert weights == pytest.approx(balanced.prob_weights)
    assert sorted(weights.values()) == pytest.approx([0.25, 0.25, 0.5])
    assert plan.num_records == 12  # the clip carries over


@pytest.mark.tensorflow
def test_tensorflow_loader(tf, work: Path) -> None:  # type: ignore[no-untyped-def]
    ds = Dataset(tfrecords=work, tile_px=64, tile_um=128).clip(2)
    data = ds.tensorflow(shuffle=False)
    items = list(data.as_numpy_iterator())
    assert len(items) == 6 and items[0][0].shape == (64, 64, 3)


def test_rois_and_crossfolds(work: Path, tmp_path: Path) -> None:
    rois = tmp_path / "rois"
    rois.mkdir()
    (rois / "slideA.geojson").write_text("{}")
    (rois / "slideZ.csv").write_text("x,y\n")
    ds = Dataset(tfrecords=work / "64px_128um", annotations=ANN, rois=rois)
    assert ds.summary().slides_with_rois == 1
    assert Dataset(tfrecords=work).summary().slides_with_rois is None
    sub = ds.filter(filters={"slide": ["slideA", "slideC", "slideD"]})
    folds = sub.crossfolds("label", 2)
    assert folds.method == "milp" and folds.optimal
    by_slide = {r["slide"]: r["CV2"] for r in folds.rows}
    assert sorted(by_slide) == ["slideA", "slideC", "slideD"]
    assert by_slide["slideC"] == by_slide["slideD"] != by_slide["slideA"]  # sites kept whole
    with pytest.raises(
        AnnotationError, match=r"row 2: patient 'p1' has another 'label' than at row 1"
    ):
        ds.crossfolds("label", 2)  # p1's two slides disagree


def _listing(root: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root`` with its size and mtime."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.stat()
        out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    st = root.stat()
    out["."] = (st.st_size, st.st_mtime_ns)
    return out


def test_reading_a_dataset_writes_nothing(work: Path, real_dir: Path) -> None:
    folder = work / "64px_128um"
    for idx in folder.glob("*.index.npz"):
        idx.unlink()  # no index: counts come from scanning, and nothing may be written
    before = _listing(work)
    ds = Dataset(tfrecords=work, annotations=ANN, tile_px=64, tile_um=128)
    n = sum(_n(real_dir, c) for c in ("slideA", "slideB", "slideC"))
    assert ds.num_tiles == n and len(ds.tfrecords()) == 3
    ds.summary()
    ds.balance(strategy="tile").clip(3).manifest()
    assert _listing(work) == before


def test_read_only_folder(work: Path, real_dir: Path) -> None:
    folder = work / "64px_128um"
    before = _listing(work)
    folder.chmod(0o555)
    try:
        ds = Dataset(tfrecords=folder)
        assert ds.slides() == ["slideA", "slideB", "slideC"]
        assert ds.num_tiles == sum(_n(real_dir, c) for c in ds.slides())
        assert ds.unreadable_tfrecords() == {}
    finally:
        folder.chmod(0o755)
    assert _listing(work) == before  # (as root the chmod alone would not stop a write)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "\x00\xff"])
def test_unparseable_manifest_is_recounted_with_a_warning_and_kept(
    work: Path, real_dir: Path, text: str, caplog: pytest.LogCaptureFixture
) -> None:
    folder = work / "64px_128um"
    manifest = folder / "manifest.json"
    manifest.write_text(text, encoding="latin-1")
    before = _listing(work)
    with caplog.at_level(logging.WARNING, logger="tilestream"):
        ds = Dataset(tfrecords=folder)
        assert ds.num_tiles == sum(_n(real_dir, c) for c in ds.slides())
    assert any(str(manifest) in r.getMessage() for r in caplog.records if r.levelname == "WARNING")
    assert _listing(work) == before
    assert manifest.read_text(encoding="latin-1") == text
