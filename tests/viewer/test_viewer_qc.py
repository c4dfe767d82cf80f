"""The viewer's QC view: ``/api/qc`` on a real server on loopback, over a real extraction.

Per slide: the outline polygons by class with their colours, the areas in mm²
and the tiles rejected per reason, the same numbers as the run's
``summary.json``. Pen and artifact masks are constructed here (the QC pass
that detects them records them the same way).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _http import request
from tilestream.extract import ExtractConfig
from tilestream.extract.outlines import CLASS_COLORS, write_outlines
from tilestream.extract.report import write_report
from tilestream.extract.roi import load_rois, rasterize_rois
from tilestream.viewer import ViewerServer

SLIDE = "CMU-1-Small-Region"

pytestmark = pytest.mark.testdata


def fetch(server: ViewerServer, path: str) -> tuple[int, bytes]:
    status, _, body = request(server, path)
    return status, body


def get_json(server: ViewerServer, path: str) -> Any:
    status, body = fetch(server, path)
    assert status == 200, body
    return json.loads(body)


def test_qc_endpoint_matches_the_summary(server: ViewerServer, run_dir: Path) -> None:
    qc = get_json(server, f"/api/qc?id={SLIDE}")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert qc["outlines"] == f"{SLIDE}.geojson"
    assert qc["areas_mm2"] == summary["qc"][SLIDE]["areas_mm2"]
    assert qc["areas_mm2"]["tissue_mm2"] > 0.1
    assert qc["rejected"] == summary["qc"][SLIDE]["rejected"]
    state = json.loads((run_dir / "state" / f"{SLIDE}.json").read_text())
    assert qc["rejected"] == state["rejected"] and qc["rejected"]["tissue"] > 0
    tissue, *qc_classes = qc["classes"]  # the final tissue first, then the QC masks
    assert {c["name"] for c in qc_classes} <= {"Pen", "Fold", "Blur"}
    assert tissue["name"] == "Tissue" and tissue["color"] == list(CLASS_COLORS["Tissue"])
    assert tissue["polygons"] and all(len(p[0]) >= 4 for p in tissue["polygons"])
    slides = {s["id"]: s for s in get_json(server, "/api/slides")["slides"]}
    assert slides[SLIDE]["has_qc"] is True
    assert slides["histolab-broken"]["has_qc"] is False
    failed = get_json(server, "/api/qc?id=histolab-broken")
    assert failed["classes"] == [] and failed["areas_mm2"] == {}


def _with_pen(run_root: Path, tmp_path: Path) -> Path:
    """A copy of the run whose slide has pen and fold outlines and recorded areas."""
    root = tmp_path / "root"
    shutil.copytree(run_root, root)
    (run,) = [p for p in root.iterdir() if p.is_dir()]
    outline = run / f"{SLIDE}.geojson"
    ds = 4.0
    shape = (742, 555)  # 2967 x 2220 px at 4 level-0 px per mask pixel
    tissue = rasterize_rois(load_rois(outline), shape, ds)
    pen = np.zeros(shape, bool)
    pen[100:140, 100:300] = True
    fold = np.zeros(shape, bool)
    fold[500:520, 200:260] = True
    write_outlines(outline, {"Tissue": tissue & ~pen & ~fold, "Pen": pen, "Fold": fold}, ds)
    state_path = run / "state" / f"{SLIDE}.json"
    state = json.loads(state_path.read_text())
    state["qc"] = {"tissue_mm2": 0.5, "pen_mm2": 0.25, "fold_mm2": 0.0625}
    state["rejected"] = {**state["rejected"], "pen": 4, "fold": 1}
    state_path.write_text(json.dumps(state))
    write_report(run, ExtractConfig(tile_px=256, tile_um=128))
    return root


def test_qc_endpoint_shows_pen_and_artifact_outlines(run_root: Path, tmp_path: Path) -> None:
    root = _with_pen(run_root, tmp_path)
    with ViewerServer(root, port=0) as srv:
        srv.start()
        qc = get_json(srv, f"/api/qc?id={SLIDE}")
        status, _ = fetch(srv, "/api/qc?id=nope")
        assert status == 404
    by_name = {c["name"]: c for c in qc["classes"]}
    assert set(by_name) == {"Tissue", "Pen", "Fold"}
    assert by_name["Pen"]["color"] == list(CLASS_COLORS["Pen"])
    (pen,) = by_name["Pen"]["polygons"]
    assert pen == [[[400.0, 400.0], [1200.0, 400.0], [1200.0, 560.0], [400.0, 560.0]]]
    assert qc["areas_mm2"] == {"tissue_mm2": 0.5, "pen_mm2": 0.25, "fold_mm2": 0.0625}
    assert qc["rejected"]["pen"] == 4 and qc["rejected"]["fold"] == 1
    summary: dict[str, Any] = json.loads((root / "256px_128um" / "summary.json").read_text())
    assert summary["qc"][SLIDE]["areas_mm2"] == qc["areas_mm2"]
    assert summary["qc"][SLIDE]["rejected"] == qc["rejected"]
