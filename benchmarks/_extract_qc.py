"""``bench_extract.py --qc``: what the quality-control masks add to an extraction.

The same extraction with QC on (the defaults) and off (``pen="off", fold="off",
blur_map="off"``), alternating, medians of the rounds; judged on CPU seconds.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from _docs import write_section
from _extract_runs import child, median, versions

QC_START = "<!-- bench_extract_qc:start -->"
QC_END = "<!-- bench_extract_qc:end -->"
CONFIGS = ((256, 128.0), (299, 302.0))


def bench_qc(slide: Path, args: argparse.Namespace, bench: Path) -> None:
    """What the QC masks add to an extraction: QC on vs off, alternating, medians of the rounds."""
    load_start = os.getloadavg()[0]
    lines = [
        "| config | QC | tiles | seconds | CPU s | mask stage s | rejected by QC |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    notes = []
    verdicts = []
    for px, um in CONFIGS:
        label = f"{px}px_{um:g}um"
        runs: dict[str, list[dict[str, Any]]] = {"qc-on": [], "qc-off": []}
        for round_ in range(args.rounds):
            order = ["qc-on", "qc-off"] if round_ % 2 == 0 else ["qc-off", "qc-on"]
            for which in order:
                result = child(which, slide, px, um, bench)
                print(
                    f"{label} round {round_ + 1} {which}: {result['tiles']} tiles "
                    f"{result['seconds']:.2f} s, {result['cpu_seconds']:.2f} CPU s, mask "
                    f"{result['stages'].get('mask', 0):.3f} s",
                    flush=True,
                )
                runs[which].append(result)
        med = {
            which: {
                "seconds": median([r["seconds"] for r in rs]),
                "cpu": median([r["cpu_seconds"] for r in rs]),
                "mask": median([r["stages"].get("mask", 0.0) for r in rs]),
                "tiles": rs[0]["tiles"],
                "rejected": rs[0]["rejected"],
            }
            for which, rs in runs.items()
        }
        on, off = med["qc-on"], med["qc-off"]
        for which, r in (("on", on), ("off", off)):
            rej = ", ".join(f"{k} {r['rejected'].get(k, 0)}" for k in ("pen", "fold", "blur_map"))
            lines.append(
                f"| {label} | {which} | {r['tiles']} | {r['seconds']:.2f} | "
                f"{r['cpu']:.2f} | {r['mask']:.3f} | {rej if which == 'on' else '-'} |"
            )
        added_cpu = 100 * (on["cpu"] / off["cpu"] - 1)
        added_mask = 100 * (on["mask"] - off["mask"]) / off["seconds"]
        added_wall = 100 * (on["seconds"] / off["seconds"] - 1)
        verdicts.append(f"{label} {'met' if added_cpu <= 10 else '**not met**'}")
        notes.append(
            f"{label}: QC adds {added_cpu:+.1f} % CPU seconds to the extraction "
            f"({on['cpu']:.2f} s vs {off['cpu']:.2f} s); the mask stage alone "
            f"{on['mask'] - off['mask']:.3f} s, {added_mask:.1f} % of the extraction's wall clock "
            f"without QC; wall clock {on['seconds']:.2f} s vs {off['seconds']:.2f} s "
            f"({added_wall:+.1f} %)."
        )
    notes.append(
        "Target (at most 10 % added, judged on CPU seconds, which other jobs on the machine do "
        f"not inflate): {'; '.join(verdicts)}."
    )
    load_end = os.getloadavg()[0]
    table = "\n".join(lines)
    print()
    print(table)
    print("\n".join(notes))
    print(f"\nload average {load_start:.1f} at the start, {load_end:.1f} at the end")
    if not args.write_docs:
        return
    command = f"python benchmarks/bench_extract.py --qc --size {args.size} --rounds {args.rounds}"
    section = "\n".join(
        [
            QC_START,
            "## Quality control: what the pen/fold/blur masks add to extraction "
            "(`benchmarks/bench_extract.py --qc`)",
            "",
            f"The generated {args.size:,} x {args.size:,} slide with 256 px tiles (`tiles-256` above), extracted by "
            "tilestream (2 threads) with the QC masks of the low-resolution image on (the "
            "defaults: pen removed, folds and out-of-focus areas measured) and off "
            '(`pen="off", fold="off", blur_map="off"`), alternating, '
            f"{args.rounds} rounds each, medians shown. The masks are computed in the `mask` stage, "
            "before any tile is read (their value per kept tile is looked up afterwards); "
            "target: at most 10 % of the extraction time.",
            "",
            f"Machine: {os.cpu_count()} CPUs shared with other jobs (load average "
            f"{load_start:.1f} at the start, {load_end:.1f} at the end), {versions()}.",
            "",
            table,
            "",
            *[f"* {n}" for n in notes],
            "",
            f"Command: `{command} --write-docs`",
            QC_END,
        ]
    )
    write_section(section, QC_START, QC_END)
