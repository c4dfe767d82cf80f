"""Run summaries: ``summary.json`` and a static ``report.html`` with previews.

Both count as extracted only the slides whose outputs are current
(:mod:`tilestream.runfolder`), and name the stale ones (outputs kept from a
failed or interrupted rerun, another config, or changed since) with the
reason, as :func:`tilestream.runfolder.stale_slides` gives it.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from tilestream._util.atomic import atomic_write, write_json_atomic
from tilestream.extract.config import ExtractConfig
from tilestream.extract.select import REJECT_REASONS
from tilestream.runfolder import slide_staleness, stale_slides

__all__ = ["load_states", "write_report"]


def load_states(run_dir: Path) -> list[dict[str, Any]]:
    """Every slide's state in ``run_dir/state``, sorted by slide name."""
    states = []
    for path in sorted((run_dir / "state").glob("*.json")):
        try:
            states.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    return states


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
        "stale": stale,
        "per_slide": states,
    }


def _encoding(state: dict[str, Any], config: ExtractConfig) -> str:
    """How a slide's tiles are stored: passed through at the scanner's quality, or encoded."""
    tiles, passed = int(state.get("tiles", 0)), int(state.get("passthrough", 0))
    if state.get("status") != "done" or not tiles:
        return ""
    encoded = f"encoded at quality {config.quality}" if config.img_format == "jpeg" else "PNG"
    if not passed:
        return encoded
    quality = state.get("stored_quality")
    stored = f"quality {quality}" if quality is not None else "unknown quality"
    text = f"{passed} passed through ({stored}, from the slide)"
    return text if passed == tiles else f"{text}; {tiles - passed} {encoded}"


def _n(count: int, noun: str) -> str:
    """``1 slide``, ``2 slides``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _row(state: dict[str, Any], config: ExtractConfig, stale: dict[str, str]) -> str:
    e = html.escape
    name = str(state.get("slide", "?"))
    status = (
        "stale"
        if name in stale and state.get("status") == "done"
        else str(state.get("status", "?"))
    )
    rejected = state.get("rejected") or {}
    rej = ", ".join(f"{k} {rejected[k]}" for k in REJECT_REASONS if rejected.get(k))
    preview = (
        f'<a href="previews/{e(name)}.jpg"><img src="previews/{e(name)}.jpg" alt="{e(name)}"></a>'
        if status == "done"
        else ""
    )
    return (
        f'<tr class="{e(status)}"><td>{preview}</td><td>{e(name)}</td><td>{e(status)}</td>'
        f"<td>{int(state.get('tiles', 0))}</td><td>{int(state.get('grid', 0))}</td>"
        f"<td>{e(rej)}</td><td>{e(_encoding(state, config))}</td>"
        f"<td>{float(state.get('seconds', 0.0)):.2f}</td>"
        f"<td>{e(str(state.get('error') or ''))}</td></tr>"
    )


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
    write_json_atomic(run_dir / "summary.json", summary)
    rows = "\n".join(_row(s, config, summary["stale"]) for s in states)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tilestream extraction report: {html.escape(config.label)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; }}
img {{ max-width: 320px; max-height: 240px; }} tr.failed {{ background: #fee; }}
tr.stale, tr.running {{ background: #ffd; }}
</style></head><body>
<h1>Extraction report: {html.escape(config.label)}</h1>
<p>{_n(summary["done"], "slide")} extracted, {summary["failed"]} failed, {len(summary["stale"])} stale, {_n(summary["tiles"], "tile")}.
Config hash <code>{summary["config_hash"]}</code>.
Kept tiles are outlined in green, rejected tiles in red, the tissue outline in blue, ROIs in yellow.</p>
{_stale_section(summary["stale"])}<table><thead><tr><th>preview</th><th>slide</th><th>status</th><th>tiles</th><th>grid</th>
<th>rejected</th><th>stored JPEG</th><th>seconds</th><th>error</th></tr></thead>
<tbody>
{rows}
</tbody></table></body></html>
"""
    with atomic_write(run_dir / "report.html", "w") as f:
        f.write(page)
    return summary
