"""Run summaries: ``summary.json`` and a static ``report.html`` with previews."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from tilestream._util.atomic import atomic_write, write_json_atomic
from tilestream.extract.config import ExtractConfig
from tilestream.extract.select import REJECT_REASONS

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


def _summary(states: list[dict[str, Any]], config: ExtractConfig) -> dict[str, Any]:
    done = [s for s in states if s.get("status") == "done"]
    failed = [s for s in states if s.get("status") == "failed"]
    return {
        "config": config.to_dict(),
        "config_hash": config.hash(),
        "slides": len(states),
        "done": len(done),
        "failed": len(failed),
        "tiles": sum(int(s.get("tiles", 0)) for s in done),
        "per_slide": states,
    }


def _n(count: int, noun: str) -> str:
    """``1 slide``, ``2 slides``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _row(state: dict[str, Any]) -> str:
    e = html.escape
    name = str(state.get("slide", "?"))
    status = str(state.get("status", "?"))
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
        f"<td>{e(rej)}</td><td>{float(state.get('seconds', 0.0)):.2f}</td>"
        f"<td>{e(str(state.get('error') or ''))}</td></tr>"
    )


def write_report(run_dir: Path, config: ExtractConfig) -> dict[str, Any]:
    """Write ``summary.json`` and ``report.html`` for every slide in ``run_dir``."""
    states = load_states(run_dir)
    summary = _summary(states, config)
    write_json_atomic(run_dir / "summary.json", summary)
    rows = "\n".join(_row(s) for s in states)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tilestream extraction report: {html.escape(config.label)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; }}
img {{ max-width: 320px; max-height: 240px; }} tr.failed {{ background: #fee; }}
</style></head><body>
<h1>Extraction report: {html.escape(config.label)}</h1>
<p>{_n(summary["done"], "slide")} extracted, {summary["failed"]} failed, {_n(summary["tiles"], "tile")}.
Config hash <code>{summary["config_hash"]}</code>.
Kept tiles are outlined in green, rejected tiles in red, the tissue outline in blue, ROIs in yellow.</p>
<table><thead><tr><th>preview</th><th>slide</th><th>status</th><th>tiles</th><th>grid</th>
<th>rejected</th><th>seconds</th><th>error</th></tr></thead>
<tbody>
{rows}
</tbody></table></body></html>
"""
    with atomic_write(run_dir / "report.html", "w") as f:
        f.write(page)
    return summary
