"""The bundled sample slide and the demo run behind ``tilestream demo``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from tilestream.extract.run import ExtractionRun, ProgressCallback, extract_slides
from tilestream.runfolder import slide_outputs

__all__ = ["DEMO_SLIDE", "DemoResult", "demo_slide_path", "run_demo"]

DEMO_SLIDE = "CMU-1-Small-Region.svs"


def demo_slide_path() -> Path:
    """Path of the bundled sample slide (Aperio SVS, CC0, from the OpenSlide project).

    >>> demo_slide_path().name
    'CMU-1-Small-Region.svs'
    """
    path = Path(str(resources.files("tilestream") / "data" / DEMO_SLIDE))
    if not path.is_file():  # pragma: no cover - broken installation
        raise FileNotFoundError(f"the bundled sample slide is missing: {path}")
    return path


@dataclass
class DemoResult:
    """What the demo produced, for the CLI to show."""

    run: ExtractionRun
    tfrecord: Path
    samples: list[dict[str, Any]] = field(default_factory=list)


def run_demo(
    out_dir: str | os.PathLike[str],
    *,
    tile_px: int = 256,
    tile_um: float | str = 128,
    progress: ProgressCallback | None = None,
) -> DemoResult:
    """Extract the sample slide and read a few tiles back through :class:`TFRecord`."""
    from tilestream.tfrecord import TFRecord, decode_image

    run = extract_slides(
        [demo_slide_path()], out_dir, workers=1, tile_px=tile_px, tile_um=tile_um, progress=progress
    )
    tfr = slide_outputs(run.run_dir, Path(DEMO_SLIDE).stem)["tfrecord"]
    samples: list[dict[str, Any]] = []
    if tfr.exists():
        with TFRecord(tfr) as records:
            n = len(records)
            for i in sorted({0, n // 2, n - 1}):
                rec = records[i]
                img = decode_image(rec["image_raw"])
                samples.append(
                    {
                        "index": i,
                        "slide": rec["slide"],
                        "loc_x": int(rec["loc_x"]),
                        "loc_y": int(rec["loc_y"]),
                        "shape": tuple(img.shape),
                        "mean_rgb": tuple(round(float(v), 1) for v in img.reshape(-1, 3).mean(0)),
                    }
                )
    return DemoResult(run=run, tfrecord=tfr, samples=samples)
