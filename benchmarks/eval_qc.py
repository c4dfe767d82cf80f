"""Evaluate pen/ink detection on real slides with painted strokes; write docs/qc pictures.

Usage::

    TILESTREAM_TESTDATA=../shared/testdata python benchmarks/eval_qc.py [--pictures docs/qc]

For each real slide: Dice, precision and recall of the pen mask over the
low-resolution image for strokes of the tuned inks and shapes, of the
reviewed set (held out, looked at once) and of the held-out set (never used
to change the detector); the tissue an unpainted slide loses to false pen
detections; and, from a full extraction of a painted pyramidal copy, the
share of kept tiles that overlap ink. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from tilestream.extract import extract_tiles
from tilestream.extract.config import ExtractConfig
from tilestream.extract.grid import plan_grid
from tilestream.extract.lowres import LowRes, mask_downsample, read_lowres
from tilestream.extract.select import select_tiles
from tilestream.extract.tissue import box_fractions
from tilestream.slide import open_slide
from tilestream.testing.pen import (
    HELDOUT_INKS,
    HELDOUT_SHAPES,
    INKS,
    REVIEWED_INKS,
    REVIEWED_SHAPES,
    SHAPES,
    paint_strokes,
    plan_strokes,
    write_painted_slide,
)

SLIDES = (
    "CMU-1-Small-Region.svs",
    "tcga-cr-7395-01a-01-ts1.svs",
    "kidney-48-5.tif",
    "test3-DAPI-2-387.ndpi",
)
SETS = {
    "tuned": (INKS, SHAPES, range(4)),
    "reviewed": (REVIEWED_INKS, REVIEWED_SHAPES, range(100, 104)),
    "held-out": (HELDOUT_INKS, HELDOUT_SHAPES, range(200, 204)),
}
TILE = {"tile_px": 64, "tile_um": 64}


def _select(low: LowRes, img: NDArray[np.uint8], **options: object) -> object:
    h, w = img.shape[:2]
    dims = (round(w * low.downsample), round(h * low.downsample))
    config = ExtractConfig(**TILE, mpp_override=0.5, **options)  # type: ignore[arg-type]
    grid = plan_grid(config, dimensions=dims, downsamples=(1.0,), mpp=0.5)
    return select_tiles(grid, LowRes(img, low.downsample), config)


def _scores(pred: NDArray[np.bool_], truth: NDArray[np.bool_]) -> tuple[float, float, float]:
    tp = float((pred & truth).sum())
    return (
        2 * tp / max(1.0, float(pred.sum() + truth.sum())),
        tp / max(1.0, float(pred.sum())),
        tp / max(1.0, float(truth.sum())),
    )


def _outline(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    inner = mask.copy()
    inner[1:] &= mask[:-1]
    inner[:-1] &= mask[1:]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    return mask & ~inner


def _picture(img: NDArray[np.uint8], truth: NDArray[np.bool_], pred: NDArray[np.bool_],
             path: Path, side: int = 360) -> None:  # fmt: skip
    h, w = img.shape[:2]
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BOX)).copy()

    def shrink(m: NDArray[np.bool_]) -> NDArray[np.bool_]:
        return np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize(size)) > 127

    t, p = _outline(shrink(truth)), _outline(shrink(pred))
    small[t] = (0, 200, 0)  # ground truth: green
    small[p] = (255, 0, 255)  # prediction: magenta
    small[t & p] = (255, 255, 0)
    Image.fromarray(small).save(path, quality=72, optimize=True)


def _kept_ink(slide: Path, seed: int, inks: dict, shapes: tuple, work: Path) -> tuple[int, int]:
    target = work / f"{slide.stem}-{seed}.tif"
    strokes = plan_strokes(seed, 8, inks=inks, shapes=shapes)
    truth = write_painted_slide(slide, target, strokes=strokes)
    r = extract_tiles(target, work / f"out-{seed}", mpp=0.5, overwrite=True, **TILE)
    if r.status != "done":
        return 0, 0
    with open(work / f"out-{seed}" / "64px_64um" / f"{target.stem}.coords.csv") as f:
        rows = list(csv.DictReader(f))
    boxes = np.array([[int(r["x"]), int(r["y"]), int(r["width"]), int(r["height"])] for r in rows])
    return int((box_fractions(truth, boxes) > 0).sum()), len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pictures", type=Path, help="write one JPEG per slide here")
    parser.add_argument("--no-extract", action="store_true", help="skip the kept-tile check")
    args = parser.parse_args()
    root = Path(os.environ.get("TILESTREAM_TESTDATA", "../shared/testdata")) / "slides"
    print("| slide | set | Dice | precision | recall | strokes' share of image |")
    print("|---|---|---|---|---|---|")
    losses = []
    for name in SLIDES:
        with open_slide(root / name) as slide:
            low = read_lowres(slide, mask_downsample(slide.dimensions, 128))
        off, on = _select(low, low.image, pen="keep"), _select(low, low.image)
        before = off.tissue_mask  # type: ignore[attr-defined]
        lost = (before & ~on.tissue_mask).sum() / max(1, before.sum())  # type: ignore[attr-defined]
        losses.append((name, 100 * lost, int(before.sum())))
        for set_name, (inks, shapes, seeds) in SETS.items():
            rows = []
            for seed in seeds:
                painted, truth = paint_strokes(
                    low.image, seed=seed, count=8, inks=inks, shapes=shapes
                )
                pred = _select(low, painted).qc_masks["pen"]  # type: ignore[attr-defined]
                rows.append((*_scores(pred, truth), truth.mean()))
                if args.pictures and set_name != "reviewed" and seed == seeds[0]:
                    args.pictures.mkdir(parents=True, exist_ok=True)
                    out = args.pictures / f"{Path(name).stem}-{set_name}.jpg"
                    _picture(painted, truth, pred, out)
            d, p, r, share = np.mean(rows, axis=0)
            lo = min(x[0] for x in rows)
            print(
                f"| {name} | {set_name} | {d:.3f} (min {lo:.3f}) | {p:.3f} | {r:.3f} | {share:.1%} |"
            )
        sys.stdout.flush()
    print("\n| slide | tissue px (low-res) | tissue lost to pen, unpainted |")
    print("|---|---|---|")
    for name, pct, px in losses:
        print(f"| {name} | {px} | {pct:.3f}% |")
    if args.no_extract:
        return
    print("\n| slide | set | kept tiles | kept tiles overlapping ink |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name in SLIDES[:2]:  # the kidney's tissue is too small for 64 um tiles
            for set_name in ("tuned", "held-out"):
                inks, shapes, seeds = SETS[set_name]
                inked, total = 0, 0
                for seed in list(seeds)[:2]:
                    i, t = _kept_ink(root / name, seed, inks, shapes, Path(tmp))
                    inked, total = inked + i, total + t
                print(f"| {name} | {set_name} | {total} | {inked} ({inked / max(1, total):.2%}) |")
                sys.stdout.flush()


if __name__ == "__main__":
    main()
