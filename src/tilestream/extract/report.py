"""Run summaries: ``summary.json`` and a static ``report.html`` with previews and a QC view.

Per extracted slide both carry the same quality-control numbers
(:func:`slide_qc`): the areas in mm² of the tissue, pen and artifact masks,
the tiles rejected for each reason, and the slide's outline file
(``<slide>.geojson``, QuPath GeoJSON).

Both count as extracted only the slides whose outputs are current
(:mod:`tilestream.runfolder`), and name the stale ones (outputs kept from a
failed or interrupted rerun, another config, or changed since) with the
reason, as :func:`tilestream.runfolder.stale_slides` gives it.

Both say how the tile grid came out (:func:`grid_summary`): whether slides
snapped to their levels' native pixels (``grid="snap"``), from what extent to
what, and the microns a tile covers on each slide.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from tilestream._util.atomic import atomic_write, write_json_atomic
from tilestream.extract.config import SNAP_TOLERANCE, ExtractConfig
from tilestream.extract.outlines import CLASS_COLORS, OTHER_COLOR, outline_areas_mm2
from tilestream.extract.select import REJECT_REASONS
from tilestream.runfolder import (
    REPORT_FILE,
    SUMMARY_FILE,
    read_states,
    slide_outputs,
    slide_staleness,
    stale_slides,
)

__all__ = [
    "REPORT_FILE",
    "SUMMARY_FILE",
    "grid_summary",
    "load_states",
    "slide_qc",
    "write_report",
]


#: Outline files larger than this are not read for areas (the areas then come from the state only).
MAX_OUTLINE_BYTES = 64 * 1024 * 1024


def load_states(run_dir: Path) -> list[dict[str, Any]]:
    """Every slide's state in ``run_dir`` (unreadable ones left out), sorted by slide name."""
    return read_states(run_dir)


def _areas_from_outlines(path: Path, mpp: Any) -> dict[str, float]:
    if not isinstance(mpp, (int, float)) or mpp <= 0:
        return {}
    try:
        if path.stat().st_size > MAX_OUTLINE_BYTES:
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return outline_areas_mm2(data, float(mpp))


def slide_qc(run_dir: Path, state: dict[str, Any]) -> dict[str, Any]:
    """The QC numbers of one slide's state: areas in mm², rejected tiles per reason, outlines.

    Returns
    -------
    dict
        ``{"areas_mm2": {"tissue_mm2": ..., "pen_mm2": ..., ...}, "rejected":
        {reason: tiles, ...}, "outlines": "<slide>.geojson" | None}``. The
        areas are the state's ``qc`` record; a state without one has them
        measured from the outline file (with the slide's mpp). Reasons are in
        :data:`~tilestream.extract.select.REJECT_REASONS` order, then any other.
    """
    name = str(state.get("slide", ""))
    outlines = slide_outputs(run_dir, name)["outlines"] if name else None
    has_file = outlines is not None and outlines.is_file()
    recorded = state.get("qc")
    areas: dict[str, float] = {}
    if isinstance(recorded, dict):
        areas = {str(k): float(v) for k, v in recorded.items() if isinstance(v, (int, float))}
    if not areas and has_file and outlines is not None:
        areas = _areas_from_outlines(outlines, state.get("mpp"))
    raw = state.get("rejected")
    rejected = {str(k): int(v) for k, v in (raw.items() if isinstance(raw, dict) else ())}
    order = [r for r in REJECT_REASONS if r in rejected] + [
        r for r in rejected if r not in REJECT_REASONS
    ]
    return {
        "areas_mm2": areas,
        "rejected": {r: rejected[r] for r in order},
        "outlines": outlines.name if has_file and outlines is not None else None,
    }


def _stale(run_dir: Path, states: list[dict[str, Any]], config_hash: str) -> dict[str, str]:
    """``{slide: reason}`` of the slides whose outputs are in the folder but not current."""
    stale = stale_slides(run_dir)
    for s in states:  # done under another config, or changed since (e.g. loose image tiles)
        name = str(s.get("slide", ""))
        if s.get("status") == "done" and name and name not in stale:
            reason = slide_staleness(run_dir, name, config_hash=config_hash, state=s)
            if reason is not None:
                stale[name] = reason
    return dict(sorted(stale.items()))


#: What tells one snap from another in :func:`grid_summary`'s ``changes``.
_CHANGE_KEYS = ("exact_px", "extract_px", "level", "tile_um")


def grid_summary(config: ExtractConfig, done: list[dict[str, Any]]) -> dict[str, Any]:
    """How the tile grid came out on the extracted slides (``summary.json``'s ``tile_grid``).

    Returns
    -------
    dict
        ``{"mode": "snap" | "exact", "tolerance": SNAP_TOLERANCE | None,
        "snapped": [slides], "tile_um": {slide: microns a tile covers},
        "changes": [{"exact_px", "extract_px", "level", "tile_um", "slides"}]}``:
        one change per distinct snap (from the exact extent to the one read).
        Slides whose state predates the ``tile_grid`` record count as not
        snapped, with ``extract_px`` times ``mpp`` as their microns.

    >>> cfg = ExtractConfig(tile_px=256, tile_um=128)
    >>> rec = {"snapped": True, "exact_px": 256.513, "extract_px": 256, "level": 0,
    ...        "tile_um": 127.744}
    >>> g = grid_summary(cfg, [{"slide": "a", "tile_grid": rec},
    ...                        {"slide": "b", "extract_px": 256, "mpp": 0.5}])
    >>> g["snapped"], g["tile_um"], len(g["changes"])
    (['a'], {'a': 127.744, 'b': 128.0}, 1)
    """
    tile_um: dict[str, float | None] = {}
    snapped: list[str] = []
    changes: dict[tuple[Any, ...], dict[str, Any]] = {}
    for state in done:
        name = str(state.get("slide", ""))
        record = state.get("tile_grid")
        if not isinstance(record, dict):
            px, mpp = state.get("extract_px"), state.get("mpp")
            ok = isinstance(px, (int, float)) and isinstance(mpp, (int, float))
            tile_um[name] = round(px * mpp, 6) if ok else None  # type: ignore[operator]
            continue
        tile_um[name] = record.get("tile_um")
        if record.get("snapped"):
            snapped.append(name)
            change = {k: record.get(k) for k in _CHANGE_KEYS}
            key = tuple(change.values())
            changes.setdefault(key, {**change, "slides": []})["slides"].append(name)
    return {
        "mode": config.grid,
        "tolerance": SNAP_TOLERANCE if config.grid == "snap" else None,
        "snapped": snapped,
        "tile_um": tile_um,
        "changes": list(changes.values()),
    }


def _grid_sentence(config: ExtractConfig, grid: dict[str, Any], done: int) -> str:
    """The report's sentence on the tile grid: exact, or snapped (from what to what) or not."""
    e = html.escape
    if grid["mode"] == "exact":
        return "Tile grid: exact (each tile is the requested size, resized where needed)."
    head = (
        f"Tile grid: snap (within {grid['tolerance']:.0%} of a level's native tiles); "
        f"{len(grid['snapped'])} of {_n(done, 'slide')} snapped"
    )
    if not grid["changes"]:
        return head + "."
    items = "; ".join(
        f"{e(config.size.label)} = {c['exact_px']} level-0 px read as {config.tile_px} native "
        f"px of level {c['level']} ({c['extract_px']} level-0 px, {c['tile_um']} um per tile) "
        f"on {_n(len(c['slides']), 'slide')}"
        for c in grid["changes"]
    )
    return f"{head}: {items}. Snapped tiles are not resized."


def _summary(run_dir: Path, states: list[dict[str, Any]], config: ExtractConfig) -> dict[str, Any]:
    stale = _stale(run_dir, states, config.hash())
    done = [s for s in states if s.get("status") == "done" and s.get("slide") not in stale]
    failed = [s for s in states if s.get("status") == "failed"]
    return {
        "config": config.to_dict(),
        "config_hash": config.hash(),
        "slides": len(states),
        "done": len(done),
        "failed": len(failed),
        "tiles": sum(int(s.get("tiles", 0)) for s in done),
        "passthrough": sum(int(s.get("passthrough", 0)) for s in done),
        "assembled": sum(int(s.get("assembled", 0)) for s in done),
        "tile_grid": grid_summary(config, done),
        "stale": stale,
        "qc": {str(s.get("slide")): slide_qc(run_dir, s) for s in done},
        "per_slide": states,
    }


def _encoding(state: dict[str, Any], config: ExtractConfig) -> str:
    """How a slide's tiles are stored: passed through at the scanner's quality, or encoded."""
    tiles, passed = int(state.get("tiles", 0)), int(state.get("passthrough", 0))
    if state.get("status") != "done" or not tiles:
        return ""
    chroma = ", 4:2:0" if config.jpeg_subsampling == "420" else ""
    encoded = (
        f"encoded at quality {config.quality}{chroma}" if config.img_format == "jpeg" else "PNG"
    )
    if not passed:
        return encoded
    quality = state.get("stored_quality")
    stored = f"quality {quality}" if quality is not None else "unknown quality"
    text = f"{passed} passed through ({stored}, from the slide)"
    assembled = int(state.get("assembled", 0))
    if assembled:  # the scanner's JPEG coefficients, cut from several stored tiles
        text = f"{passed} from the slide's JPEG tiles without re-encoding ({stored}; {assembled} assembled losslessly from several stored tiles)"
    return text if passed == tiles else f"{text}; {tiles - passed} {encoded}"


def _n(count: int, noun: str) -> str:
    """``1 slide``, ``2 slides``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _swatch(key: str) -> str:
    name = key.removesuffix("_mm2")
    color = CLASS_COLORS.get(name[:1].upper() + name[1:], OTHER_COLOR)
    return f'<span class="sw" style="background: rgb{color}"></span>'


def _qc_cell(qc: dict[str, Any] | None) -> str:
    """The QC view of one slide: areas with their outline colours, rejected tiles per reason."""
    if qc is None:
        return ""
    e = html.escape
    areas = "".join(
        f"<li>{_swatch(k)}{e(k.removesuffix('_mm2'))}: {v:.3f} mm²</li>"
        for k, v in qc["areas_mm2"].items()
    )
    rejected = "".join(f"<li>{e(k)}: {v}</li>" for k, v in qc["rejected"].items())
    link = f'<br><a href="{e(qc["outlines"])}">{e(qc["outlines"])}</a>' if qc["outlines"] else ""
    return (
        f'<td class="qc"><b>areas</b><ul class="areas">{areas or "<li>none recorded</li>"}</ul>'
        f'<b>tiles rejected</b><ul class="rejected">{rejected}</ul>{link}</td>'
    )


def _row(
    run_dir: Path,
    state: dict[str, Any],
    config: ExtractConfig,
    stale: dict[str, str],
    qc: dict[str, Any] | None = None,
) -> str:
    e = html.escape
    name = str(state.get("slide", "?"))
    status = (
        "stale"
        if name in stale and state.get("status") == "done"
        else str(state.get("status", "?"))
    )
    rejected = state.get("rejected") or {}
    rej = ", ".join(f"{k} {v}" for k, v in _reasons(rejected) if v)
    preview = ""
    if status == "done":
        link = e(slide_outputs(run_dir, name)["preview"].relative_to(run_dir).as_posix())
        preview = f'<a href="{link}"><img src="{link}" alt="{e(name)}"></a>'

    return (
        f'<tr class="{e(status)}"><td>{preview}</td><td>{e(name)}</td><td>{e(status)}</td>'
        f"<td>{int(state.get('tiles', 0))}</td><td>{int(state.get('grid', 0))}</td>"
        f"<td>{e(rej)}</td><td>{e(_encoding(state, config))}</td>"
        f"<td>{float(state.get('seconds', 0.0)):.2f}</td>"
        f"<td>{e(str(state.get('error') or ''))}</td>"
        f"{_qc_cell(qc) if qc is not None else '<td></td>'}</tr>"
    )


def _reasons(rejected: Any) -> list[tuple[str, int]]:
    """``(reason, tiles)`` in :data:`REJECT_REASONS` order, then reasons not listed there."""
    if not isinstance(rejected, dict):
        return []
    order = [r for r in REJECT_REASONS if r in rejected]
    order += [str(r) for r in rejected if r not in REJECT_REASONS]
    return [(r, int(rejected[r] or 0)) for r in order]


def _stale_section(stale: dict[str, str]) -> str:
    if not stale:
        return ""
    e = html.escape
    items = "\n".join(f"<li><b>{e(name)}</b>: {e(reason)}</li>" for name, reason in stale.items())
    return (
        f"<h2>Stale slides ({len(stale)})</h2>\n<p>Their outputs are kept in the folder "
        "(nothing is deleted) but are not current: the manifest, datasets, loaders and "
        f"the viewer leave them out.</p>\n<ul>\n{items}\n</ul>\n"
    )


def write_report(run_dir: Path, config: ExtractConfig) -> dict[str, Any]:
    """Write ``summary.json`` and ``report.html`` for every slide in ``run_dir``."""
    states = load_states(run_dir)
    summary = _summary(run_dir, states, config)
    write_json_atomic(run_dir / SUMMARY_FILE, summary)
    qc = summary["qc"]
    rows = "\n".join(
        _row(run_dir, s, config, summary["stale"], qc.get(str(s.get("slide")))) for s in states
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tilestream extraction report: {html.escape(config.label)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; }}
img {{ max-width: 320px; max-height: 240px; }} tr.failed {{ background: #fee; }}
tr.stale, tr.running {{ background: #ffd; }}
td.qc ul {{ margin: 0 0 4px 0; padding-left: 1.2em; }} .sw {{ display: inline-block; width: 10px; height: 10px; margin-right: 4px; }}
</style></head><body>
<h1>Extraction report: {html.escape(config.label)}</h1>
<p>{_n(summary["done"], "slide")} extracted, {summary["failed"]} failed, {len(summary["stale"])} stale, {_n(summary["tiles"], "tile")}.
Config hash <code>{summary["config_hash"]}</code>.</p>
<p class="grid">{_grid_sentence(config, summary["tile_grid"], summary["done"])}</p>
<p>Kept tiles are outlined in green, rejected tiles in red, the tissue outline in blue, pen and
artifact outlines in their class colours (see each slide's QC column), ROIs in yellow.
Each slide's outlines are in <code>&lt;slide&gt;.geojson</code> (QuPath GeoJSON, level-0 pixels):
correct them in QuPath and give the file back as the slide's ROI.</p>
{_stale_section(summary["stale"])}<table><thead><tr><th>preview</th><th>slide</th><th>status</th><th>tiles</th><th>grid</th>
<th>rejected</th><th>stored JPEG</th><th>seconds</th><th>error</th><th>QC</th></tr></thead>
<tbody>
{rows}
</tbody></table></body></html>
"""
    with atomic_write(run_dir / REPORT_FILE, "w") as f:
        f.write(page)
    return summary
