"""Backend conformance: the same tests for every backend, on every file it reads.

Each case is a real slide from the shared test data (or a TIFF/PNG written here
from a real slide's pixels) with its expected geometry and metadata taken from
the data's SOURCES.md. Pixels are compared with OpenSlide's ``read_region`` on
the files OpenSlide reads, otherwise with the decoded image itself (tifffile /
Pillow). Tolerances: reads at whole level pixels are exact (max abs diff 0);
reads whose level-0 location falls between a level's pixels are bilinear like
OpenSlide's cairo path and agree within 2 in premultiplied RGBA.

The ``dicomweb`` cases are DICOM series served by a real Orthanc on loopback
(the shared ``dicom-openslide-boxes`` and a 3-level pyramid dicomized here from
CMU-1-Small-Region); OpenSlide reads the same files locally as the reference.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile
from PIL import Image

from conftest import missing
from dicomweb.dicomweb_testing import dicomize_pyramid
from tilestream.errors import SlideError
from tilestream.slide import Slide, available_backends, open_slide
from tilestream.testing.orthanc import OrthancServer, dicomizer_binary, orthanc_binary, plugin_path

pytestmark = pytest.mark.testdata


@dataclass(frozen=True)
class Case:
    """A file and what every backend reading it must report."""

    name: str
    backends: tuple[str, ...]
    levels: tuple[tuple[int, int], ...]  # stored levels (a backend may add more after them)
    vendor: str | None
    mpp: float | None
    objective: float | None
    associated: frozenset[str] = field(default_factory=frozenset)
    openslide_reads: bool = True
    tile: tuple[int, int] | None = None


CASES = [
    Case(
        "CMU-1-Small-Region.svs",
        ("tifffile", "openslide"),
        ((2220, 2967),),
        "aperio",
        0.499,
        20.0,
        frozenset({"label", "macro", "thumbnail"}),
        tile=(240, 240),
    ),
    Case(
        "tcga-cr-7395-01a-01-ts1.svs",
        ("tifffile", "openslide"),
        ((4443, 3567), (2221, 1783)),
        "aperio",
        None,
        None,
        frozenset({"thumbnail"}),
        tile=(256, 256),
    ),
    Case(
        "test3-DAPI-2-387.ndpi",
        ("tifffile", "openslide"),
        ((3968, 4864), (1984, 2432), (992, 1216), (496, 608)),
        "hamamatsu",
        0.2281750559028887,
        40.0,
        frozenset({"macro"}),
        tile=(3968, 8),
    ),
    Case(
        "openslide-python-small.svs",
        ("tifffile", "openslide"),
        ((16, 16),),
        "aperio",
        0.499,
        20.0,
        frozenset({"thumbnail"}),
        tile=(64, 64),
    ),
    Case(
        "openslide-python-boxes.tiff",
        ("tifffile", "openslide"),
        ((300, 250), (150, 125), (75, 62), (37, 31)),
        "generic-tiff",
        None,  # 72 dpi resolution tags: implausible, reported and ignored
        None,
        tile=(64, 64),
    ),
    Case(
        "dicom-openslide-boxes/boxes_0.dcm",
        ("openslide",),
        ((16, 16),),
        "dicom",
        0.499,
        20.0,
        frozenset({"thumbnail"}),
        tile=(64, 64),
    ),
    Case(
        "dicom-openslide-boxes/boxes_1.dcm",
        ("openslide",),
        ((16, 16),),
        "dicom",
        0.499,
        20.0,
        frozenset({"thumbnail"}),
        tile=(64, 64),
    ),
    Case(
        "kidney-48-5.tif",
        ("tifffile", "image"),
        ((1493, 901),),
        None,
        None,
        None,
        openslide_reads=False,
    ),
    # Written here from real pixels (CMU-1-Small-Region), see generated_dir.
    Case(
        "gen/jpeg-pyramid.tif",
        ("tifffile", "openslide"),
        ((1024, 768), (512, 384), (256, 192)),
        "generic-tiff",
        0.25,
        None,
        tile=(128, 128),
    ),
    Case(
        "gen/deflate-pyramid.tif",
        ("tifffile", "openslide"),
        ((1000, 700), (500, 350)),
        "generic-tiff",
        0.5,
        None,
        tile=(256, 256),
    ),
    Case(
        "gen/ome-pyramid.ome.tif",
        ("tifffile",),
        ((1000, 700), (500, 350)),
        "ome-tiff",
        None,
        None,
        openslide_reads=False,
        tile=(256, 256),
    ),
    # DICOM series served over DICOMweb by Orthanc, see dicomweb_urls.
    Case(
        "dicomweb:openslide-boxes",
        ("dicomweb",),
        ((16, 16),),
        "dicom",
        0.499,
        20.0,
        frozenset({"thumbnail"}),
        tile=(64, 64),
    ),
    Case(
        "dicomweb:cmu-pyramid",
        ("dicomweb",),
        ((2220, 2967), (1110, 1484), (555, 742)),
        "dicom",
        0.499,
        None,
        tile=(240, 240),
    ),
    Case("gen/plain.png", ("image",), ((640, 480),), None, None, None, openslide_reads=False),
    Case("gen/plain.jpg", ("image",), ((640, 480),), None, None, None, openslide_reads=False),
]

PAIRS = [(b, c) for c in CASES for b in c.backends]


def _ids(pair: tuple[str, Case]) -> str:
    return f"{pair[0]}-{pair[1].name}"


@pytest.fixture(scope="session")
def real_pixels(slides_dir: Path) -> np.ndarray:
    """A 1024x768 RGB crop of a real H&E slide."""
    return tifffile.imread(slides_dir / "CMU-1-Small-Region.svs")[600:1368, 400:1424]


@pytest.fixture(scope="session")
def generated_dir(tmp_path_factory: pytest.TempPathFactory, real_pixels: np.ndarray) -> Path:
    """TIFFs and images written here with tifffile / Pillow from real pixels."""
    root = tmp_path_factory.mktemp("gen")
    img = real_pixels
    with tifffile.TiffWriter(root / "jpeg-pyramid.tif") as tw:
        for i in range(3):
            tw.write(
                img[:: 2**i, :: 2**i],
                tile=(128, 128),
                compression="jpeg",
                photometric="rgb",
                subfiletype=1 if i else 0,
                resolution=(40000, 40000),  # per cm: 0.25 um/px
                resolutionunit="CENTIMETER",
            )
    crop = img[:700, :1000]
    with tifffile.TiffWriter(root / "deflate-pyramid.tif") as tw:
        for i in range(2):
            tw.write(
                np.ascontiguousarray(crop[:: 2**i, :: 2**i]),
                tile=(256, 256),
                compression="zlib",
                photometric="rgb",
                subfiletype=1 if i else 0,
                resolution=(20000, 20000),  # per cm: 0.5 um/px
                resolutionunit="CENTIMETER",
            )
    with tifffile.TiffWriter(root / "ome-pyramid.ome.tif", ome=True) as tw:
        tw.write(
            crop,
            subifds=1,
            tile=(256, 256),
            compression="zlib",
            photometric="rgb",
            metadata={"axes": "YXS"},
        )
        tw.write(crop[::2, ::2], subfiletype=1, tile=(256, 256), compression="zlib")
    Image.fromarray(img[:480, :640]).save(root / "plain.png")
    Image.fromarray(img[:480, :640]).save(root / "plain.jpg", quality=90)
    return root


#: The local DICOM file OpenSlide reads for each DICOMweb URL (filled by ``dicomweb_urls``).
LOCAL: dict[str, Path] = {}


def _local(path: Path | str) -> Path | str:
    return LOCAL.get(str(path), path)


@pytest.fixture(scope="session")
def dicomweb_urls(
    slides_dir: Path, cmu_slide: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """A real Orthanc holding the DICOMweb cases' series: case name -> slide URL."""
    if orthanc_binary() is None or plugin_path("dicomweb") is None or dicomizer_binary() is None:
        missing("Orthanc, its DICOMweb plugin and OrthancWSIDicomizer are needed")
    pyramid = tmp_path_factory.mktemp("dicom-pyramid")
    dicomize_pyramid(cmu_slide, pyramid)
    folders = {"openslide-boxes": slides_dir / "dicom-openslide-boxes", "cmu-pyramid": pyramid}
    with OrthancServer(tmp_path_factory.mktemp("orthanc-conformance")) as server:
        urls = {}
        for name, folder in folders.items():
            (ref,) = server.upload([folder])
            urls[f"dicomweb:{name}"] = url = ref.url(server.dicomweb_url)
            LOCAL[url] = sorted(folder.glob("*.dcm"))[0]
        yield urls


@pytest.fixture
def case_path(
    request: pytest.FixtureRequest, slides_dir: Path, generated_dir: Path
) -> Callable[[Case], Path | str]:
    def resolve(case: Case) -> Path | str:
        if case.name.startswith("dicomweb:"):
            urls: dict[str, str] = request.getfixturevalue("dicomweb_urls")
            return urls[case.name]
        if case.name.startswith("gen/"):
            return generated_dir / case.name[4:]
        return slides_dir / case.name

    return resolve


@pytest.fixture(params=PAIRS, ids=[_ids(p) for p in PAIRS])
def opened(request: pytest.FixtureRequest, case_path: Callable[[Case], Path | str]):
    backend, case = request.param
    path = case_path(case)
    with open_slide(path, backend=backend) as slide:
        yield backend, case, path, slide


def _reference_level(path: Path, case: Case, level: int) -> np.ndarray:
    """RGB of a whole stored level, decoded independently of tilestream."""
    if path.suffix in (".png", ".jpg"):
        return np.asarray(Image.open(path).convert("RGB"))
    with tifffile.TiffFile(path) as tif:
        return np.asarray(tif.series[0].levels[level].asarray())


def _premultiplied(rgba: np.ndarray) -> np.ndarray:
    a = rgba[..., 3:4].astype(np.int32)
    return np.concatenate([rgba[..., :3].astype(np.int32) * a // 255, a], axis=-1)


def test_every_backend_has_cases() -> None:
    assert set(available_backends()) == {b for b, _ in PAIRS}


def test_metadata(opened) -> None:
    backend, case, _, slide = opened
    assert slide.backend == backend
    stored = len(case.levels)
    assert slide.level_dimensions[:stored] == case.levels
    assert slide.dimensions == case.levels[0]
    assert slide.level_count == len(slide.level_dimensions) >= stored
    assert slide.level_downsamples[0] == 1.0
    assert list(slide.level_downsamples) == sorted(set(slide.level_downsamples))
    assert slide.vendor == case.vendor
    if case.mpp is None:
        assert slide.mpp is None
    else:
        assert slide.mpp == pytest.approx((case.mpp, case.mpp), rel=1e-6)
    assert slide.objective_power == case.objective
    assert set(slide.associated_images) >= case.associated
    assert slide.tile_size == case.tile
    assert slide.bounds == (0, 0, *case.levels[0])
    assert slide.background_color == (255, 255, 255)
    props = slide.properties
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in props.items())
    assert props["openslide.level-count"] == str(slide.level_count)
    for i, (w, h) in enumerate(slide.level_dimensions):
        assert props[f"openslide.level[{i}].width"] == str(w)
        assert props[f"openslide.level[{i}].height"] == str(h)


def test_metadata_matches_openslide(opened) -> None:
    _, case, path, slide = opened
    if not case.openslide_reads:
        pytest.skip("OpenSlide does not read this file")
    with openslide.OpenSlide(_local(path)) as osr:
        n = len(case.levels)
        assert slide.level_dimensions[:n] == osr.level_dimensions[:n]
        assert slide.level_downsamples[:n] == pytest.approx(osr.level_downsamples[:n], rel=1e-12)
        ours, theirs = slide.properties, osr.properties
        for key in ("openslide.vendor", "openslide.objective-power", "openslide.comment"):
            assert ours.get(key) == theirs.get(key), key
        for key in theirs:
            if key.startswith("aperio.") or key == "tiff.ImageDescription":
                assert ours[key] == theirs[key], key
        if slide.backend == "dicomweb":  # OpenSlide re-serialises a DICOM profile (lcms)
            assert ours.get("openslide.icc-size") == theirs.get("openslide.icc-size")
            return
        assert slide.color_profile == (
            osr.color_profile.tobytes() if osr.color_profile is not None else None
        )


def _locations(slide: Slide, level: int) -> list[tuple[int, int]]:
    w0, h0 = slide.dimensions
    ds = slide.level_downsamples[level]
    aligned = [
        (0, 0),
        (round(ds * 37), round(ds * 11)),
        (w0 - int(ds * 40), h0 - int(ds * 30)),  # runs off the bottom-right corner
        (-int(ds * 20), -int(ds * 10)),  # starts above-left of the slide
        (w0 + 10, 0),  # wholly outside
    ]
    return aligned


def test_read_region_matches_reference(opened) -> None:
    _, case, path, slide = opened
    osr = openslide.OpenSlide(_local(path)) if case.openslide_reads else None
    try:
        for level in range(len(case.levels)):
            ds = slide.level_downsamples[level]
            for loc in _locations(slide, level):
                region = slide.read_region(loc, level, (120, 90))
                assert region.mode == "RGBA" and region.size == (120, 90)
                got = np.asarray(region)
                if osr is not None:
                    want = np.asarray(osr.read_region(loc, level, (120, 90)))
                    aligned = all(float(v / ds).is_integer() or v < 0 for v in loc)
                    if aligned:
                        np.testing.assert_array_equal(got, want, err_msg=f"{loc} L{level}")
                    else:
                        diff = np.abs(_premultiplied(got) - _premultiplied(want))
                        assert diff.max() <= 2, (loc, level, diff.max())
                elif all(float(v / ds).is_integer() for v in loc):
                    ref = _reference_level(path, case, level)
                    want = np.zeros((90, 120, 4), np.uint8)
                    lx, ly = int(loc[0] / ds), int(loc[1] / ds)
                    x0, y0 = max(lx, 0), max(ly, 0)
                    crop = ref[y0 : ly + 90, x0 : lx + 120]
                    if crop.size:
                        h, w = crop.shape[:2]
                        want[y0 - ly : y0 - ly + h, x0 - lx : x0 - lx + w, :3] = crop
                        want[y0 - ly : y0 - ly + h, x0 - lx : x0 - lx + w, 3] = 255
                    np.testing.assert_array_equal(got, want, err_msg=f"{loc} L{level}")
    finally:
        if osr is not None:
            osr.close()


def test_read_region_fractional_matches_openslide(opened) -> None:
    _, case, path, slide = opened
    if not case.openslide_reads or slide.level_count < 2:
        pytest.skip("needs OpenSlide and a second level")
    with openslide.OpenSlide(_local(path)) as osr:
        for level in range(1, len(case.levels)):
            for loc in [(3, 5), (101, 37), (-3, 7), (slide.dimensions[0] - 201, 9)]:
                got = np.asarray(slide.read_region(loc, level, (64, 48)))
                want = np.asarray(osr.read_region(loc, level, (64, 48)))
                diff = np.abs(_premultiplied(got) - _premultiplied(want))
                assert diff.max() <= 2, (loc, level, diff.max())


def test_read_region_as_array(opened) -> None:
    _, _, _, slide = opened
    w0, h0 = slide.dimensions
    loc = (max(w0 - 50, 0), max(h0 - 40, 0))
    iw, ih = w0 - loc[0], h0 - loc[1]  # the part inside the slide
    rgba = np.asarray(slide.read_region(loc, 0, (80, 60)))
    rgb = slide.read_region(loc, 0, (80, 60), as_array=True)
    assert rgb.shape == (60, 80, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[:ih, :iw], rgba[:ih, :iw, :3])
    assert (rgba[ih:, :, 3] == 0).all() and (rgba[:, iw:, 3] == 0).all()
    assert (rgb[ih:, :] == 255).all() and (rgb[:, iw:] == 255).all()
    inside = slide.read_region((0, 0), 0, (min(w0, 70), min(h0, 50)), as_array=True)
    np.testing.assert_array_equal(
        inside, np.asarray(slide.read_region((0, 0), 0, inside.shape[1::-1]))[..., :3]
    )


def test_read_region_arguments(opened) -> None:
    _, _, _, slide = opened
    assert slide.read_region((0, 0), 0, (0, 0)).size == (0, 0)
    assert slide.read_region((0, 0), 0, (0, 5), as_array=True).shape == (5, 0, 3)
    with pytest.raises(ValueError, match="level"):
        slide.read_region((0, 0), slide.level_count, (4, 4))
    with pytest.raises(ValueError, match="non-negative"):
        slide.read_region((0, 0), 0, (-1, 4))


def test_thumbnail_and_best_level(opened) -> None:
    _, case, path, slide = opened
    thumb = slide.get_thumbnail((200, 200))
    assert thumb.mode == "RGB" and max(thumb.size) <= 200
    assert slide.get_best_level_for_downsample(0.5) == 0
    assert slide.get_best_level_for_downsample(1e9) == slide.level_count - 1
    for i, ds in enumerate(slide.level_downsamples):
        assert slide.get_best_level_for_downsample(ds) == i
        assert slide.get_best_level_for_downsample(ds + 0.01) == i
    if case.openslide_reads:
        with openslide.OpenSlide(_local(path)) as osr:
            if osr.level_downsamples == slide.level_downsamples:
                np.testing.assert_array_equal(
                    np.asarray(thumb), np.asarray(osr.get_thumbnail((200, 200)))
                )
            for d in (1.0, 1.5, 2.0, 3.0, 5.0, 100.0):
                if osr.level_downsamples == slide.level_downsamples:
                    assert slide.get_best_level_for_downsample(
                        d
                    ) == osr.get_best_level_for_downsample(d)


def test_associated_images(opened) -> None:
    _, case, path, slide = opened
    images = slide.associated_images
    assert len(images) == len(list(images))
    for name in images:
        image = images[name]
        assert isinstance(image, Image.Image) and image.mode == "RGB"
        props = slide.properties
        assert image.size == (
            int(props[f"openslide.associated.{name}.width"]),
            int(props[f"openslide.associated.{name}.height"]),
        )
    with pytest.raises(KeyError):
        images["no-such-image"]
    if case.openslide_reads and slide.backend != "openslide":
        with openslide.OpenSlide(_local(path)) as osr:
            for name, theirs in osr.associated_images.items():
                np.testing.assert_array_equal(
                    np.asarray(images[name]), np.asarray(theirs.convert("RGB")), err_msg=name
                )


def test_pickle_and_close(opened) -> None:
    backend, _, _, slide = opened
    clone = pickle.loads(pickle.dumps(slide))
    try:
        assert clone.backend == backend and clone.path == slide.path
        np.testing.assert_array_equal(
            clone.read_region((0, 0), 0, (8, 8), as_array=True),
            slide.read_region((0, 0), 0, (8, 8), as_array=True),
        )
    finally:
        clone.close()
    clone.close()  # closing twice is fine
    with pytest.raises(SlideError, match="closed"):
        clone.read_region((0, 0), 0, (8, 8))


def test_mpp_override(opened) -> None:
    backend, _, path, _ = opened
    with open_slide(path, backend=backend, mpp=0.3) as slide:
        assert slide.mpp == (0.3, 0.3)
        assert slide.require_mpp() == (0.3, 0.3)
    with open_slide(path, backend=backend, mpp=(0.3, 0.4)) as slide:
        assert slide.mpp == (0.3, 0.4)
