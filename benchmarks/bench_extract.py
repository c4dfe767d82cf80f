"""Extraction speed on real scanner geometry: tilestream against Slideflow itself, and the floors.

For each slide geometry (``--geometry``: Aperio 20x and 40x with 240 px tiles, 256 px
tiles as GT450 and DICOM store them, 512 px tiles as Philips does) a large slide is
generated once and extracted, in the same run, by:

* **tilestream**: ``extract_tiles(..., threads=2)`` with its defaults (snapped grid;
  stored JPEG tiles passed through or assembled losslessly where the grid allows);
* **tilestream re-encode**: the same with ``jpeg_passthrough=False`` (every tile
  decoded and encoded), where the default passes any tile through;
* **Slideflow**: ``sf.WSI(...).extract_tiles`` (cuCIM backend, 2 threads) run by
  Slideflow's own interpreter, given with ``--slideflow-python PATH``
  (``benchmarks/README.md`` has the install recipe); without it the row says skipped;
* **OpenSlide loop**: a straightforward loop (``read_region``, Slideflow's grayspace
  filter on the low-resolution image, Pillow resize, JPEG q95), two processes: a
  sanity row;
* **floors** (``_floors.py``): every stored tile under a kept tile decoded once; that
  plus every output tile encoded once; and, where the lossless mosaic is built,
  every needed stored tile entropy-decoded once and every output tile entropy-encoded
  once; each on one core and over two processes.

Rates are kept tiles per second of *work* (opening the slide and extracting,
measured inside each process: interpreter start-up and imports are left out, and
reported beside as the whole process). ``--rounds N`` alternates the contenders and
keeps each one's best round.

``--qc`` measures instead what the quality-control pass adds (``_extract_qc.py``).

Usage::

    python benchmarks/bench_extract.py --size 20000                      # Aperio 20x
    python benchmarks/bench_extract.py --size 20000 --geometry all \\
        --slideflow-python /path/to/slideflow-venv/bin/python --rounds 2 --write-docs
    python benchmarks/bench_extract.py --qc --size 20000 --rounds 7 --write-docs
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _docs import write_section
from _extract_qc import bench_qc
from _extract_runs import (
    GEOMETRIES,
    QC_OFF,
    WORK,
    Geometry,
    child,
    coords_copy,
    make_slide,
    run_loop,
    run_slideflow,
    run_tilestream,
    versions,
)
from _floors import measure_floors_apart

START = "<!-- bench_extract:start -->"
END = "<!-- bench_extract:end -->"

Result = dict[str, Any]


def _run_child_main(args: list[str]) -> None:
    which, slide, tile_px, tile_um, out = args
    px, um = int(tile_px), float(tile_um)
    if which == "loop":
        result = run_loop(slide, px, um, out)
    elif which == "qc-off":
        result = run_tilestream(slide, px, um, out, **QC_OFF)
    elif which == "tilestream-reencode":
        result = run_tilestream(slide, px, um, out, jpeg_passthrough=False)
    else:  # "tilestream", "qc-on"
        result = run_tilestream(slide, px, um, out)
    print(json.dumps(result))


def _one(which: str, slide: Path, px: int, um: float, sf_python: str | None) -> Result:
    if which == "slideflow":
        assert sf_python is not None
        return run_slideflow(sf_python, slide, px, um)
    return child(which, slide, px, um, Path(__file__))


def bench_config(
    slide: Path, px: int, um: float, args: argparse.Namespace
) -> tuple[dict[str, Result], dict[str, Any]]:
    """Every contender on one geometry and tile size (best round each), and the floors."""
    best: dict[str, Result] = {}
    first = _one("tilestream", slide, px, um, None)
    contenders = ["tilestream"]
    if first.get("passthrough"):
        contenders.append("tilestream-reencode")
    if args.slideflow_python:
        contenders.append("slideflow")
    if not args.no_loop:
        contenders.append("loop")
    best["tilestream"] = first
    for round_ in range(args.rounds):
        order = contenders if round_ % 2 == 0 else contenders[::-1]
        for which in order:
            if round_ == 0 and which == "tilestream":
                result = first
            else:
                result = _one(which, slide, px, um, args.slideflow_python)
            print(
                f"  {px}px_{um:g}um round {round_ + 1} {which}: {result['tiles']} tiles, "
                f"work {result['seconds']:.2f} s, process {result['process_seconds']:.2f} s, "
                f"{result['cpu_seconds']:.1f} CPU s, {result['peak_mb']:.0f} MB",
                flush=True,
            )
            if which not in best or result["seconds"] < best[which]["seconds"]:
                best[which] = result
    floors = measure_floors_apart(slide, coords_copy(slide, px, um), px)
    return best, floors


def _rate(r: Result) -> float:
    return float(r["tiles"] / r["seconds"]) if r["seconds"] else 0.0


def _row(label: str, name: str, r: Result, sf: Result | None) -> str:
    ratio = f"**{_rate(r) / _rate(sf):.1f}x**" if sf else "-"
    mem = f"{r['peak_mb']:.0f}"
    if sf:
        mem += f" ({r['peak_mb'] / sf['peak_mb']:.2f})"
    return (
        f"| {label} | {name} | {r['tiles']} | {r['process_seconds']:.1f} | "
        f"{r['seconds']:.2f} | {_rate(r):,.0f} | {ratio} | {r['cpu_seconds']:.1f} | {mem} |"
    )


def _name(which: str, r: Result) -> str:
    if which == "slideflow":
        return f"Slideflow {r['version']} ({r['backend']}, extract {r['extract_px']} px)"
    if which == "loop":
        return "OpenSlide loop (sanity row)"
    grid = r.get("tile_grid") or {}
    snapped = " snapped" if grid.get("snapped") else ""
    how = []
    assembled = int(r.get("assembled") or 0)
    copied = int(r.get("passthrough") or 0) - assembled
    if copied:
        how.append(f"{copied} stored tiles copied")
    if assembled:
        how.append(f"{assembled} assembled losslessly")
    kind = "re-encode" if which == "tilestream-reencode" else "default"
    extra = f", {', '.join(how)}" if how else ""
    return f"tilestream {kind}{snapped}{extra}"


def _floor_rows(label: str, tiles: int, floors: dict[str, Any]) -> list[str]:
    rows = []
    names = {
        "decode": "floor: decode every stored tile once",
        "decode_encode": "floor: decode + encode",
        "entropy": "floor: entropy decode + encode",
    }
    for key, text in names.items():
        one = floors["one_core"].get(key)
        two = floors["two_cores"].get(key)
        if one is None:
            continue
        rows.append(
            f"| {label} | {text} | {tiles} | - | {one:.2f} / {two:.2f} | "
            f"{tiles / one:,.0f} / {tiles / two:,.0f} | - | - | - |"
        )
    return rows


def _verdicts(results: dict[tuple[str, str], tuple[dict[str, Result], dict[str, Any]]]) -> str:
    def get(geom: str, label: str) -> tuple[dict[str, Result], dict[str, Any]] | None:
        return results.get((geom, label))

    lines = []
    main = get("aperio-20x", "256px_128um")
    if main is not None:
        best, floors = main
        sf = best.get("slideflow")
        ours = best["tilestream"]
        lossless = bool(ours.get("passthrough"))
        if sf is None:
            lines.append("* 8x Slideflow with the lossless path: Slideflow not run.")
        else:
            value = _rate(ours) / _rate(sf)
            met = "met" if value >= 8 and lossless else "**not met**"
            how = "lossless path" if lossless else "no lossless path on this geometry yet"
            lines.append(
                f"* At least 8x Slideflow with the lossless path: {met}, {value:.1f}x ({how})."
            )
        reencode = best.get("tilestream-reencode", ours)
        floor = reencode["tiles"] / floors["two_cores"]["decode_encode"]
        share = _rate(reencode) / floor
        met = "met" if share >= 0.8 else "**not met**"
        lines.append(
            f"* Re-encode path at 80 % or more of its two-core decode + encode floor: {met}, "
            f"{100 * share:.0f} % ({_rate(reencode):,.0f} against {floor:,.0f} tiles/s)."
        )
        if sf is not None:
            ratio = ours["peak_mb"] / sf["peak_mb"]
            met = "met" if ratio <= 0.25 else "**not met**"
            lines.append(
                f"* Peak RSS at most a quarter of Slideflow's: {met}, {ratio:.2f} "
                f"({ours['peak_mb']:.0f} MB against {sf['peak_mb']:.0f} MB)."
            )
    resized = get("aperio-20x", "299px_302um")
    if resized is not None and "slideflow" in resized[0]:
        value = _rate(resized[0]["tilestream"]) / _rate(resized[0]["slideflow"])
        met = "met" if value >= 3 else "**not met**"
        lines.append(f"* At least 3x Slideflow at 299 px / 302 um (resized): {met}, {value:.1f}x.")
    return "\n".join(lines)


def _table(results: dict[tuple[str, str], tuple[dict[str, Result], dict[str, Any]]]) -> str:
    lines = [
        "| geometry, config | contender | tiles | process s | work s | tiles/s (work) "
        "| x Slideflow | CPU s | peak MB (x Slideflow) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (geom, label), (best, floors) in results.items():
        sf = best.get("slideflow")
        where = f"{geom}, {label}"
        for which in ("tilestream", "tilestream-reencode", "slideflow", "loop"):
            if which in best:
                lines.append(_row(where, _name(which, best[which]), best[which], sf))
        if sf is None:
            lines.append(
                f"| {where} | Slideflow: skipped (no `--slideflow-python`) | | | | | | | |"
            )
        lines.extend(_floor_rows(where, best["tilestream"]["tiles"], floors))
    return "\n".join(lines)


def _docs(
    results: dict[tuple[str, str], tuple[dict[str, Result], dict[str, Any]]],
    args: argparse.Namespace,
    load: tuple[float, float],
) -> None:
    command = f"python benchmarks/bench_extract.py --size {args.size} --geometry {args.geometry}"
    if args.rounds != 1:
        command += f" --rounds {args.rounds}"
    if args.slideflow_python:
        command += " --slideflow-python SLIDEFLOW_VENV/bin/python"
    geoms = sorted({g for g, _ in results}, key=list(GEOMETRIES).index)
    section = "\n".join(
        [
            START,
            "## Extraction on real scanner geometry: tilestream, Slideflow and the floors "
            "(`benchmarks/bench_extract.py`)",
            "",
            f"Generated {args.size:,} x {args.size:,} slides (`make_synthetic_slide`, JPEG "
            "q80 tiles, about half the area real tissue from CMU-1-Small-Region.svs), one per "
            "geometry:",
            "",
            *[f"* `{g}`: {GEOMETRIES[g].about}" for g in geoms],
            "",
            "Each contender in its own process, the same slide, the same run, best of "
            f"{args.rounds} alternating round(s). **tiles/s (work)** counts kept tiles over "
            "the seconds of opening the slide and extracting, measured inside the process "
            "(interpreter start-up and imports excluded; `process s` is the whole process). "
            "Slideflow keeps more tiles than tilestream on the same slide (its grayspace "
            "filter alone against tilestream's tissue mask), so rates per kept tile are "
            "compared, not seconds. Floor rows give one core / two processes: CPU seconds "
            "of the codec calls alone (`_floors.py`), and the rate they bound. "
            "`peak MB` is `ru_maxrss`.",
            "",
            f"Machine: {os.cpu_count()} CPUs shared with other jobs (load average "
            f"{load[0]:.1f} at the start, {load[1]:.1f} at the end), {versions()}.",
            "",
            _table(results),
            "",
            "Targets (issue: extraction at the physical limit), on `aperio-20x`:",
            "",
            _verdicts(results),
            "",
            f"Command: `{command} --write-docs`",
            END,
        ]
    )
    write_section(section, START, END)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20000, help="slide side in level-0 pixels")
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds; best kept")
    parser.add_argument(
        "--geometry",
        default="aperio-20x",
        help=f"comma-separated, or 'all': {', '.join(GEOMETRIES)}",
    )
    parser.add_argument("--slideflow-python", help="Slideflow's interpreter (see README.md)")
    parser.add_argument("--no-loop", action="store_true", help="skip the OpenSlide loop")
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--qc", action="store_true", help="time the QC pass instead")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _run_child_main(args.child)
        return
    if args.qc:
        bench_qc(make_slide(args.size, GEOMETRIES["tiles-256"]), args, Path(__file__))
        return
    names = list(GEOMETRIES) if args.geometry == "all" else args.geometry.split(",")
    load_start = os.getloadavg()[0]
    results: dict[tuple[str, str], tuple[dict[str, Result], dict[str, Any]]] = {}
    for name in names:
        geometry: Geometry = GEOMETRIES[name]
        slide = make_slide(args.size, geometry)
        print(f"{name}: {geometry.about}; {args.size} x {args.size}", flush=True)
        for px, um in geometry.configs:
            results[(name, geometry.label(px, um))] = bench_config(slide, px, um, args)
    load = (load_start, os.getloadavg()[0])
    saved = {
        f"{g}|{c}": {"best": best, "floors": floors} for (g, c), (best, floors) in results.items()
    }
    (WORK / "bench_extract.json").write_text(json.dumps({"size": args.size, "results": saved}))
    print()
    print(_table(results))
    print()
    print(_verdicts(results))
    print(f"\nload average {load[0]:.1f} at the start, {load[1]:.1f} at the end")
    if args.write_docs:
        _docs(results, args, load)


if __name__ == "__main__":
    main()
