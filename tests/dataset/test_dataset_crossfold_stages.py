"""Cross-folds: the steps of generate_crossfolds, each alone."""

from __future__ import annotations

import numpy as np
import pytest

from tilestream.dataset import crossfolds as cf
from tilestream.dataset import generate_crossfolds, load_annotations
from tilestream.errors import AnnotationError, ConfigError

PATIENTS = {  # patient: (category value, site)
    "p1": ("x", "A"),
    "p2": ("y", "A"),
    "p3": ("x", "B"),
    "p4": ("x", "B"),
    "p5": ("y", "C"),
}


def test_fold_counts_per_category_value() -> None:
    fold = {"p1": 1, "p2": 2, "p3": 2, "p4": 1, "p5": 2}
    assert cf._fold_counts(PATIENTS, fold, 2) == {"x": [2, 1], "y": [0, 2]}


def test_stratified_folds_deal_each_category_evenly() -> None:
    found = cf._stratified_folds(PATIENTS, 2, seed=0)
    counts = cf._fold_counts(PATIENTS, found.patient_fold, 2)
    assert sorted(counts["x"]) == [1, 2] and sorted(counts["y"]) == [1, 1]
    assert sorted(len(f) for f in found.folds) == [2, 3]
    # the objective is Slideflow's, over the patients' folds
    expected = sum((2 * c - sum(cs)) ** 2 for cs in counts.values() for c in cs)
    assert (found.method, found.optimal, found.objective) == ("stratified", True, expected)
    with pytest.raises(ConfigError, match="5 patients cannot fill 6 folds"):
        cf._stratified_folds(PATIENTS, 6, seed=0)


def test_site_folds_keep_each_site_in_one_fold() -> None:
    found = cf._site_folds(PATIENTS, 3, method="greedy", timelimit=1, seed=0)
    assert sorted(s for fold in found.folds for s in fold) == ["A", "B", "C"]
    for patient, (_, site) in PATIENTS.items():
        assert site in found.folds[found.patient_fold[patient] - 1]
    assert found.method == "greedy" and not found.optimal
    with pytest.raises(ConfigError, match="3 sites cannot fill 4 site-preserved folds"):
        cf._site_folds(PATIENTS, 4, method="greedy", timelimit=1, seed=0)


def test_assign_sites_picks_milp_when_small_and_greedy_when_asked() -> None:
    pytest.importorskip("scipy.optimize")
    counts = np.array([[2, 1, 1], [1, 1, 0]], dtype=np.int64)
    assign, optimal, used, notes = cf._assign_sites(counts, 2, method="auto", timelimit=5, seed=0)
    assert (optimal, used, notes) == (True, "milp", [])
    best = min(
        cf.crossfold_objective(counts, [a, b, c], 2) for a in (0, 1) for b in (0, 1) for c in (0, 1)
    )
    assert cf.crossfold_objective(counts, assign, 2) == best
    _, optimal, used, _ = cf._assign_sites(counts, 2, method="greedy", timelimit=1, seed=0)
    assert (optimal, used) == (False, "greedy")


def test_columns_chosen_for_patients_and_sites() -> None:
    with_patient = load_annotations([{"slide": "s1", "patient": "p1", "site": "A", "label": "x"}])
    slides_only = load_annotations([{"slide": "s1", "label": "x"}])
    neither = load_annotations([{"case": "c1", "label": "x"}], slide_column=None)
    assert cf._patient_column(with_patient, "patient") == "patient"
    assert cf._patient_column(slides_only, "patient") == "slide"
    with pytest.raises(AnnotationError, match="no 'patient' or 'slide' column"):
        cf._patient_column(neither, "patient")
    assert cf._site_column(with_patient, "auto", "site") == "site"
    assert cf._site_column(with_patient, "stratified", "site") is None
    assert cf._site_column(slides_only, "auto", "site") is None
    with pytest.raises(AnnotationError, match="method='milp' needs a site column 'site'"):
        cf._site_column(slides_only, "milp", "site")


def test_a_misspelt_option_is_refused() -> None:
    rows = [{"patient": f"p{i}", "label": "xy"[i % 2]} for i in range(4)]
    with pytest.raises(TypeError, match="seeds"):
        generate_crossfolds(rows, "label", 2, seeds=1)  # type: ignore[call-overload]
