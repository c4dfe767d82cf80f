"""Damaged files never crash, hang or leak a dependency's exception.

Real slides are corrupted byte by byte (seeded, mostly in the headers and
directories) and opened and read with every backend in a child process, so a
segfault or a hang in a native library fails the test instead of killing the
run. Only our ``SlideError`` subclasses may come out.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.testdata

SCRIPT = textwrap.dedent(
    """
    import faulthandler, pathlib, random, sys, traceback
    faulthandler.enable()
    from tilestream.errors import SlideError
    from tilestream.slide import open_slide

    out, count = pathlib.Path(sys.argv[1]), int(sys.argv[2])
    sources = [pathlib.Path(p) for p in sys.argv[3:]]
    for seed in range(count):
        rng = random.Random(seed)
        src = rng.choice(sources)
        data = bytearray(src.read_bytes())
        for _ in range(rng.randint(1, 8)):
            limit = min(len(data), 1024) if rng.random() < 0.7 else len(data)
            data[rng.randrange(limit)] = rng.randrange(256)
        folder = out / f"s{seed}"  # DICOM: OpenSlide scans the folder for the series
        folder.mkdir()
        path = folder / src.name
        path.write_bytes(bytes(data))
        print("seed", seed, src.name, flush=True)
        for backend in ("auto", "tifffile", "openslide", "image"):
            try:
                with open_slide(path, backend=backend) as slide:
                    slide.read_region((0, 0), 0, (64, 64), as_array=True)
                    slide.read_region((3, 3), slide.level_count - 1, (16, 16))
                    for name in list(slide.associated_images):
                        try:
                            slide.associated_images[name]
                        except SlideError:
                            pass
                    slide.get_thumbnail((32, 32))
            except SlideError as exc:
                assert str(path) in str(exc), exc
            except Exception as exc:
                print("BAD", seed, backend, type(exc).__name__, exc, flush=True)
                traceback.print_exc()
    print("done", flush=True)
    """
)


@pytest.mark.slow
def test_corrupted_slides_only_raise_slide_errors(slides_dir: Path, tmp_path: Path) -> None:
    sources = [
        slides_dir / "openslide-python-small.svs",
        slides_dir / "openslide-python-boxes.tiff",
        slides_dir / "dicom-openslide-boxes" / "boxes_0.dcm",
        slides_dir / "CMU-1-Small-Region.svs",
    ]
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path), "80", *map(str, sources)],
        capture_output=True,
        text=True,
        timeout=540,
    )
    last = proc.stdout.strip().splitlines()[-1:] or ["(nothing)"]
    assert proc.returncode == 0, (
        f"child died ({proc.returncode}) after {last}: {proc.stderr[-3000:]}"
    )
    bad = [line for line in proc.stdout.splitlines() if line.startswith("BAD")]
    assert not bad, "\n".join(bad) + proc.stderr[-3000:]
    assert last == ["done"]
