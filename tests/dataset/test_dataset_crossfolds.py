"""Cross-folds: the site constraint, and the balance against brute force on small inputs."""

from __future__ import annotations

import itertools
import random
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from conftest import missing  # tests/conftest.py: skip here, fail under CI=true
from tilestream.dataset import crossfold_objective, generate_crossfolds, load_annotations
from tilestream.dataset.crossfolds import _greedy
from tilestream.errors import AnnotationError, ConfigError, MissingDependencyError


def _random_rows(rng: random.Random, n_sites: int, n_values: int = 3) -> list[dict[str, str]]:
    rows = []
    p = 0
    for s in range(n_sites):
        for _ in range(rng.randint(1, 9)):
            value = "abc"[rng.randrange(n_values)]
            # two slides for some patients: the fold is per patient
            for slide in range(rng.choice([1, 1, 2])):
                rows.append(
                    {"slide": f"p{p}-{slide}", "patient": f"p{p}", "site": f"S{s}", "label": value}
                )
            p += 1
    return rows


def _counts(rows: list[dict[str, str]]) -> tuple[np.ndarray, list[str]]:
    patients = {r["patient"]: (r["label"], r["site"]) for r in rows}
    values = sorted({v for v, _ in patients.values()})
    sites = sorted({s for _, s in patients.values()})
    c = np.zeros((len(values), len(sites)), dtype=np.int64)
    for v, s in patients.values():
        c[values.index(v), sites.index(s)] += 1
    return c, sites


def _brute_force(counts: np.ndarray, k: int) -> float:
    return min(
        crossfold_objective(counts, a, k)
        for a in itertools.product(range(k), repeat=counts.shape[1])
    )


def _check_sites(
    rows: list[dict[str, str]], result_rows: list[dict[str, str]], column: str, k: int
) -> None:
    fold_of_site: dict[str, str] = {}
    fold_of_patient: dict[str, str] = {}
    for r in result_rows:
        assert r[column] in {str(i + 1) for i in range(k)}
        assert fold_of_site.setdefault(r["site"], r[column]) == r[column], "a site split over folds"
        assert fold_of_patient.setdefault(r["patient"], r[column]) == r[column]
    assert [{k2: v for k2, v in r.items() if k2 != column} for r in result_rows] == rows


@pytest.mark.parametrize("seed", range(12))
def test_milp_matches_brute_force_and_keeps_sites_whole(seed: int) -> None:
    rng = random.Random(seed)
    k = rng.choice([2, 3])
    rows = _random_rows(rng, rng.randint(k, 7))
    counts, sites = _counts(rows)
    result = generate_crossfolds(rows, "label", k, method="milp")
    assert result.method == "milp" and result.optimal
    assert result.objective == _brute_force(counts, k)
    _check_sites(rows, result.rows, f"CV{k}", k)
    assert sorted(s for f in result.folds for s in f) == sites  # each site in exactly one fold
    # the reported per-fold counts are the real ones
    for value, per_fold in result.counts.items():
        for i, n in enumerate(per_fold):
            assert n == len(
                {
                    r["patient"]
                    for r in result.rows
                    if r["label"] == value and r[f"CV{k}"] == str(i + 1)
                }
            )


@pytest.mark.parametrize("seed", range(6))
def test_greedy_is_feasible_and_never_beats_the_optimum(seed: int) -> None:
    rng = random.Random(100 + seed)
    rows = _random_rows(rng, 7)
    counts, _ = _counts(rows)
    best = _brute_force(counts, 3)
    assign = _greedy(counts, 3, seed=seed, timelimit=1)
    assert crossfold_objective(counts, assign, 3) >= best
    result = generate_crossfolds(rows, "label", 3, method="greedy", timelimit=1)
    assert result.method == "greedy" and result.objective >= best
    _check_sites(rows, result.rows, "CV3", 3)


def test_greedy_finds_the_optimum_on_a_small_known_case() -> None:
    # sites of sizes that split perfectly: {A,D} {B,E} {C,F}
    counts = np.array([[4, 3, 2, 2, 3, 4], [1, 1, 1, 1, 1, 1]])
    assign = _greedy(counts, 3, seed=0, timelimit=1)
    assert crossfold_objective(counts, assign, 3) == 0 == _brute_force(counts, 3)


def test_stratified_by_patient_without_site_column() -> None:
    rows = [
        {"slide": f"s{i}", "patient": f"p{i // 2}", "label": "ab"[(i // 2) % 2]} for i in range(36)
    ]
    result = generate_crossfolds(rows, "label", 3)
    assert result.method == "stratified"
    assert result.counts == {"a": [3, 3, 3], "b": [3, 3, 3]}
    folds = {}
    for r in result.rows:  # both slides of a patient in the same fold
        assert folds.setdefault(r["patient"], r["CV3"]) == r["CV3"]
    again = generate_crossfolds(rows, "label", 3, seed=0)
    assert again.patient_fold == result.patient_fold  # seeded
    # with a site column, asking for stratified ignores sites
    with_sites = [dict(r, site=f"S{i % 2}") for i, r in enumerate(rows)]
    assert generate_crossfolds(with_sites, "label", 3, method="stratified").method == "stratified"


def test_bad_inputs_name_the_problem(tmp_path: Path) -> None:
    rows = [
        {"patient": "p1", "site": "A", "label": "x"},
        {"patient": "p1", "site": "B", "label": "x"},
        {"patient": "p2", "site": "C", "label": "y"},
    ]
    with pytest.raises(
        AnnotationError, match="row 2: patient 'p1' has another 'site' than at row 1"
    ):
        generate_crossfolds(rows, "label", 2)
    rows[1]["site"] = "A"
    rows[1]["label"] = "y"
    with pytest.raises(AnnotationError, match="another 'label'"):
        generate_crossfolds(rows, "label", 2)
    with pytest.raises(AnnotationError, match="missing column 'grade'"):
        generate_crossfolds(rows, "grade", 2)
    with pytest.raises(ConfigError, match="k must be an integer >= 2"):
        generate_crossfolds(rows, "label", 1)
    ok = [
        {"patient": "p1", "site": "A", "label": "x"},
        {"patient": "p2", "site": "B", "label": "y"},
    ]
    with pytest.raises(ConfigError, match="2 sites cannot fill 3"):
        generate_crossfolds(ok, "label", 3)
    with pytest.raises(AnnotationError, match="needs a site column"):
        generate_crossfolds([{"patient": "p", "label": "x"}], "label", 2, method="milp")
    csv = tmp_path / "a.csv"
    csv.write_text("patient,site,label\np1,A,x\np2,,y\n")
    with pytest.raises(AnnotationError, match=r"a\.csv: line 3: empty 'site'"):
        generate_crossfolds(csv, "label", 2)


def test_csv_input_and_custom_columns(tmp_path: Path) -> None:
    csv = tmp_path / "a.csv"
    lines = ["slide,institution,grade"] + [f"s{i},I{i % 4},{'hl'[i % 3 == 0]}" for i in range(24)]
    csv.write_text("\n".join(lines) + "\n")
    result = generate_crossfolds(
        load_annotations(csv), "grade", 2, site_column="institution", target_column="fold"
    )
    assert result.method == "milp" and result.optimal
    assert {r["fold"] for r in result.rows} == {"1", "2"}
    by_site = {}
    for r in result.rows:
        assert by_site.setdefault(r["institution"], r["fold"]) == r["fold"]


def test_large_input_uses_a_time_limit() -> None:
    rng = random.Random(7)
    rows = _random_rows(rng, 30)
    result = generate_crossfolds(rows, "label", 3, timelimit=5)
    assert result.method in ("milp", "greedy")
    _check_sites(rows, result.rows, "CV3", 3)
    counts, _ = _counts(rows)
    greedy = crossfold_objective(counts, _greedy(counts, 3, seed=0, timelimit=1), 3)
    assert result.objective <= greedy


@pytest.fixture(scope="module")
def pd() -> ModuleType:
    """pandas, or a skip (a failure under CI, where the test extra installs it)."""
    try:
        import pandas
    except ImportError:
        missing("pandas is not installed (pip install -e '.[test]')")
        raise
    return pandas


def test_dataframe_in_gives_that_dataframe_out_with_the_fold_column(pd: ModuleType) -> None:
    """Slideflow's contract: the same DataFrame (index, order) with ``target_column`` as "1".."k"."""
    rng = random.Random(3)
    rows = _random_rows(rng, 6)
    frame = pd.DataFrame(rows, index=[f"r{i}" for i in range(len(rows))][::-1])
    frame["age"] = [float(i) for i in range(len(rows))]  # a non-text column rides along
    original = frame.copy()
    out = generate_crossfolds(frame, "label", 3)
    assert out is frame  # as in Slideflow, the fold column is added to the DataFrame given
    assert list(out.columns) == [*original.columns, "CV3"]
    assert list(out.index) == list(original.index)
    pd.testing.assert_frame_equal(out.drop(columns="CV3"), original)
    expected = generate_crossfolds(rows, "label", 3)
    assert list(out["CV3"]) == [r["CV3"] for r in expected.rows]
    assert all(isinstance(v, str) for v in out["CV3"]) and set(out["CV3"]) <= {"1", "2", "3"}
    again = generate_crossfolds(
        original.copy(), "label", 2, target_column="fold", method="stratified"
    )
    assert list(again.columns) == [*original.columns, "fold"]
    for patient, group in again.groupby("patient"):
        assert group["fold"].nunique() == 1, patient


def test_dataframe_blank_cells_are_empty_values(pd: ModuleType) -> None:
    frame = pd.DataFrame(
        {"patient": ["p1", "p2", "p3"], "site": ["A", None, "C"], "label": ["x", "y", "x"]}
    )
    with pytest.raises(AnnotationError, match="row 2: empty 'site'"):
        generate_crossfolds(frame, "label", 2)
    frame.loc[1, "site"] = float("nan")
    with pytest.raises(AnnotationError, match="row 2: empty 'site'"):
        generate_crossfolds(frame, "label", 2)
    assert "CV2" not in frame.columns  # nothing added when it fails


def test_without_scipy_the_exact_solver_names_its_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """SciPy is the ``crossfolds`` extra: greedy and stratified folds work without it."""
    for name in [m for m in sys.modules if m == "scipy" or m.startswith("scipy.")]:
        monkeypatch.setitem(sys.modules, name, None)  # a None entry makes the import fail
    monkeypatch.setitem(sys.modules, "scipy", None)
    rows = _random_rows(random.Random(5), 5)
    for method in ("milp", "auto"):
        with pytest.raises(MissingDependencyError, match=r"pip install 'tilestream\[crossfolds\]'"):
            generate_crossfolds(rows, "label", 3, method=method)  # type: ignore[arg-type]
    greedy = generate_crossfolds(rows, "label", 3, method="greedy", timelimit=1)
    _check_sites(rows, greedy.rows, "CV3", 3)
    assert generate_crossfolds(rows, "label", 3, method="stratified").method == "stratified"


_BLOCK_AND_IMPORT = """
import importlib, importlib.abc, pkgutil, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "scipy" or name.startswith("scipy."):
            raise ImportError(f"blocked: {name}")
sys.meta_path.insert(0, Block())
import tilestream
bad = []
for mod in pkgutil.walk_packages(tilestream.__path__, "tilestream."):
    if mod.name.split(".")[1] in ("torch", "tf"):  # the frameworks' own extras
        continue
    try:
        importlib.import_module(mod.name)
    except ImportError as exc:
        if "scipy" in str(exc):
            bad.append(f"{mod.name}: {exc}")
print("\\n".join(bad) or "ok")
"""


def test_the_core_imports_without_scipy() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _BLOCK_AND_IMPORT],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert out.stdout.strip() == "ok", out.stdout + out.stderr
