"""Cross-validation folds: site-preserved (as in Slideflow) or stratified by patient.

Site-preserved cross-validation (Howard et al., Nat. Commun. 2021) puts every
site (the institution a slide came from) in exactly one fold and balances the
categories: it minimises, over categories ``v`` and folds ``i``,
``(k * n[v, i] - N[v])**2``, where ``n[v, i]`` counts the patients of
category ``v`` in fold ``i`` and ``N[v]`` all patients of category ``v``.
This is Slideflow's objective; Slideflow solves it with CPLEX through cvxpy.
Here it is an exact mixed-integer linear program solved by HiGHS (shipped with
SciPy, :func:`scipy.optimize.milp`): each convex square is replaced by the
maximum of its chords between consecutive integers, which equals the square
at every integer count, so the optimum is the true optimum. A greedy
assignment improved by local search (moves and swaps of sites, several
seeded restarts) serves large inputs and a solver that hits its time limit
(whichever of the two is better is kept).

Without a site column, patients are split into ``k`` folds stratified by
category (shuffled with ``seed``, dealt round-robin).

As in Slideflow, a pandas ``DataFrame`` given comes back as that same
DataFrame (same index and row order) with the fold column added, its values
the strings ``"1"`` .. ``"k"``; other inputs give a :class:`CrossfoldResult`.
The exact MILP needs SciPy (``pip install 'tilestream[crossfolds]'``); the
greedy and stratified methods need nothing more.

Examples
--------
>>> rows = [{"patient": f"p{i}", "site": s, "label": l} for i, (s, l) in enumerate(
...     [("A", "x"), ("A", "y"), ("B", "x"), ("B", "y"), ("C", "x"), ("C", "y")])]
>>> result = generate_crossfolds(rows, "label", k=3)
>>> result.method, result.optimal, result.objective
('milp', True, 0.0)
>>> sorted(len(f) for f in result.folds)
[1, 1, 1]
>>> sorted({r["CV3"] for r in result.rows})
['1', '2', '3']
"""

from __future__ import annotations

import logging
import math
import os
import random
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypedDict, overload

import numpy as np
import numpy.typing as npt

from tilestream.dataset.annotations import Annotations, load_annotations
from tilestream.errors import AnnotationError, ConfigError

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["CrossfoldOptions", "CrossfoldResult", "crossfold_objective", "generate_crossfolds"]

log = logging.getLogger(__name__)

Method = Literal["auto", "milp", "greedy", "stratified"]

#: Above this many chord constraints ("auto") the greedy search is used alone.
MILP_MAX_ROWS = 200_000


@dataclass
class CrossfoldResult:
    """Folds and how they were found.

    Attributes
    ----------
    rows : list of dict
        The input rows (copies), each with ``target_column`` set to ``"1"`` .. ``"k"``.
    folds : list of list of str
        The sites in each fold (patients, for stratified folds).
    patient_fold : dict
        ``{patient: fold}`` with folds numbered from 1.
    counts : dict
        ``{category value: [patients in fold 1, ..., fold k]}``.
    objective : float
        ``sum((k * n[v, i] - N[v])**2)``; 0 is a perfect balance.
    optimal : bool
        The solver proved the assignment optimal.
    method : str
        ``"milp"``, ``"greedy"`` or ``"stratified"``.
    """

    rows: list[dict[str, Any]]
    folds: list[list[str]]
    patient_fold: dict[str, int]
    counts: dict[str, list[int]]
    objective: float
    optimal: bool
    method: str
    notes: list[str] = field(default_factory=list)


def crossfold_objective(
    counts: npt.NDArray[np.int64], assignment: Sequence[int] | npt.NDArray[np.int64], k: int
) -> float:
    """Slideflow's imbalance of an assignment of sites to folds.

    Parameters
    ----------
    counts
        ``counts[v, s]``: patients of category ``v`` at site ``s``.
    assignment
        The fold (0-based) of each site.
    k
        Number of folds.

    Examples
    --------
    >>> crossfold_objective(np.array([[2, 1, 1]]), [0, 1, 2], 3)
    6.0
    """
    a = np.asarray(assignment, dtype=np.int64)
    per_fold = np.zeros((counts.shape[0], k), dtype=np.int64)
    for i in range(k):
        per_fold[:, i] = counts[:, a == i].sum(axis=1)
    total = counts.sum(axis=1, keepdims=True)
    return float(((k * per_fold - total) ** 2).sum())


def _solve_milp(
    counts: npt.NDArray[np.int64], k: int, timelimit: float
) -> tuple[npt.NDArray[np.int64] | None, bool]:
    from tilestream._util.optional import require

    optimize = require(
        "scipy.optimize",
        extra="crossfolds",
        purpose="exact site-preserved cross-folds (method='greedy' needs nothing more)",
    )
    sparse = require("scipy.sparse", extra="crossfolds", purpose="exact cross-folds")
    bounds_cls, constraint_cls, milp = optimize.Bounds, optimize.LinearConstraint, optimize.milp

    n_cat, n_sites = counts.shape
    n_g = n_sites * k  # g[s, i] at s * k + i
    n_var = n_g + n_cat * k  # then z[v, i]
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    lb: list[float] = []
    ub: list[float] = []
    r = 0
    for s in range(n_sites):  # each site in exactly one fold
        for i in range(k):
            rows.append(r)
            cols.append(s * k + i)
            vals.append(1.0)
        lb.append(1.0)
        ub.append(1.0)
        r += 1
    totals = counts.sum(axis=1)
    for v in range(n_cat):
        big_t = int(totals[v])

        def f(x: int, big_t: int = big_t) -> float:
            return float((k * x - big_t) ** 2)

        for i in range(k):
            z = n_g + v * k + i
            # z >= f(j) + slope_j * (x - j) for each chord j..j+1, x = sum_s c[v,s] g[s,i]
            for j in range(max(big_t, 1)):
                slope = f(j + 1) - f(j)
                rows.append(r)
                cols.append(z)
                vals.append(1.0)
                for s in range(n_sites):
                    c = int(counts[v, s])
                    if c:
                        rows.append(r)
                        cols.append(s * k + i)
                        vals.append(-slope * c)
                lb.append(f(j) - slope * j)
                ub.append(np.inf)
                r += 1
    a = sparse.coo_matrix((vals, (rows, cols)), shape=(r, n_var)).tocsr()
    upper = np.ones(n_var)
    upper[n_g:] = np.inf
    for s in range(n_sites):  # symmetry: site s goes to one of the first s + 1 folds
        for i in range(s + 1, k):
            upper[s * k + i] = 0.0
    cost = np.zeros(n_var)
    cost[n_g:] = 1.0
    integrality = np.zeros(n_var)
    integrality[:n_g] = 1
    res = milp(
        cost,
        integrality=integrality,
        bounds=bounds_cls(np.zeros(n_var), upper),
        constraints=constraint_cls(a, np.array(lb), np.array(ub)),
        options={"time_limit": float(timelimit), "disp": False},
    )
    if res.x is None:
        log.info("MILP found no solution (%s)", res.message)
        return None, False
    g = np.asarray(res.x[:n_g]).reshape(n_sites, k)
    return g.argmax(axis=1).astype(np.int64), bool(res.status == 0)


def _greedy(
    counts: npt.NDArray[np.int64], k: int, *, seed: int, timelimit: float
) -> npt.NDArray[np.int64]:
    n_cat, n_sites = counts.shape
    totals = counts.sum(axis=1)
    rng = random.Random(seed)
    deadline = time.monotonic() + max(float(timelimit), 0.05)
    best: npt.NDArray[np.int64] | None = None
    best_obj = np.inf
    base_order = sorted(range(n_sites), key=lambda s: -int(counts[:, s].sum()))
    restarts = 0
    while restarts < 8 or (restarts < 64 and time.monotonic() < deadline):
        order = list(base_order)
        if restarts:
            rng.shuffle(order)
        per_fold = np.zeros((n_cat, k), dtype=np.int64)
        assign = np.zeros(n_sites, dtype=np.int64)
        for s in order:
            col = counts[:, s]
            scores = []
            for i in range(k):
                trial = per_fold[:, i] + col
                scores.append(
                    float(
                        ((k * trial - totals) ** 2).sum()
                        - ((k * per_fold[:, i] - totals) ** 2).sum()
                    )
                )
            i_best = int(np.argmin(scores))
            assign[s] = i_best
            per_fold[:, i_best] += col
        obj = _local_search(counts, assign, per_fold, k, deadline)
        if obj < best_obj:
            best, best_obj = assign.copy(), obj
        restarts += 1
        if best_obj == 0 or time.monotonic() > deadline:
            break
    assert best is not None
    return best


def _local_search(
    counts: npt.NDArray[np.int64],
    assign: npt.NDArray[np.int64],
    per_fold: npt.NDArray[np.int64],
    k: int,
    deadline: float,
) -> float:
    """Improve ``assign`` in place by single moves and pairwise swaps; return the objective."""
    totals = counts.sum(axis=1)

    def cost(pf: npt.NDArray[np.int64]) -> float:
        return float(((k * pf - totals[:, None]) ** 2).sum())

    current = cost(per_fold)
    n_sites = counts.shape[1]
    improved = True
    while improved and current > 0 and time.monotonic() < deadline:
        improved = False
        for s in range(n_sites):
            a = int(assign[s])
            for b in range(k):
                if b == a:
                    continue
                per_fold[:, a] -= counts[:, s]
                per_fold[:, b] += counts[:, s]
                c = cost(per_fold)
                if c < current:
                    assign[s], current, improved = b, c, True
                    break
                per_fold[:, b] -= counts[:, s]
                per_fold[:, a] += counts[:, s]
        if improved:
            continue
        for s in range(n_sites):
            for t in range(s + 1, n_sites):
                a, b = int(assign[s]), int(assign[t])
                if a == b:
                    continue
                delta = counts[:, s] - counts[:, t]
                per_fold[:, a] -= delta
                per_fold[:, b] += delta
                c = cost(per_fold)
                if c < current:
                    assign[s], assign[t], current, improved = b, a, c, True
                    break
                per_fold[:, a] += delta
                per_fold[:, b] -= delta
            if improved:
                break
    return current


def _patients(
    ann: Annotations, category: str, patient_column: str, site_column: str | None
) -> dict[str, tuple[str, str]]:
    """``{patient: (category value, site)}``, checking each patient has one of each."""
    out: dict[str, tuple[str, str]] = {}
    first: dict[str, int] = {}
    for n, row in enumerate(ann.rows):
        patient = row[patient_column]
        value = row[category]
        site = row[site_column] if site_column else ""
        if not patient:
            raise AnnotationError(f"{ann.where(n)}: empty {patient_column!r}")
        if not value:
            raise AnnotationError(f"{ann.where(n)}: empty {category!r}")
        if site_column and not site:
            raise AnnotationError(f"{ann.where(n)}: empty {site_column!r}")
        if patient in out and out[patient] != (value, site):
            what = category if out[patient][0] != value else site_column
            raise AnnotationError(
                f"{ann.where(n)}: patient {patient!r} has another {what!r} than at "
                f"{ann.line(first[patient])}"
            )
        out.setdefault(patient, (value, site))
        first.setdefault(patient, n)
    return out


CrossfoldInput = Sequence[Mapping[str, Any]] | Annotations | str | os.PathLike[str]


def _dataframe(data: Any) -> Any | None:
    """``data`` when it is a pandas DataFrame (pandas is then already imported), else ``None``."""
    pd = sys.modules.get("pandas")
    return data if pd is not None and isinstance(data, pd.DataFrame) else None


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = str(value)
    return "" if text in ("<NA>", "NaT") and type(value).__module__.startswith("pandas") else text


def _frame_rows(frame: Any) -> list[dict[str, str]]:
    columns = [str(c) for c in frame.columns]
    if len(set(columns)) != len(columns):
        dup = sorted({c for c in columns if columns.count(c) > 1})
        raise AnnotationError(f"DataFrame has duplicate column names: {dup}")
    return [
        {c: _cell(v) for c, v in zip(columns, values, strict=True)}
        for values in frame.itertuples(index=False, name=None)
    ]


class CrossfoldOptions(TypedDict, total=False):
    """The keyword options of :func:`generate_crossfolds` (described there)."""

    target_column: str | None
    site_column: str | None
    patient_column: str
    method: Method
    timelimit: float
    seed: int


@overload
def generate_crossfolds(
    data: CrossfoldInput, category: str, k: int = 3, **options: Unpack[CrossfoldOptions]
) -> CrossfoldResult: ...


@overload
def generate_crossfolds(
    data: Any, category: str, k: int = 3, **options: Unpack[CrossfoldOptions]
) -> Any: ...


def generate_crossfolds(
    data: Any,
    category: str,
    k: int = 3,
    *,
    target_column: str | None = None,
    site_column: str | None = "site",
    patient_column: str = "patient",
    method: Method = "auto",
    timelimit: float = 10,
    seed: int = 0,
) -> CrossfoldResult:
    """Assign every row to one of ``k`` cross-validation folds.

    Parameters
    ----------
    data
        Rows (dicts), :class:`~tilestream.dataset.annotations.Annotations`, a
        CSV file, or a pandas ``DataFrame`` (blank cells are empty values).
    category
        The column to balance across folds.
    k
        Number of folds (at least 2).
    target_column
        The column to write the fold (``"1"``..``"k"``) into; default ``f"CV{k}"``.
    site_column
        The column of sites; when it is ``None`` or not in the data, plain
        stratified k-fold by patient.
    patient_column
        The column of patients (folds are per patient); ``slide`` is used when absent.
    method
        ``"auto"`` (exact MILP when the problem is small enough, else greedy),
        ``"milp"``, ``"greedy"``, or ``"stratified"`` (ignore sites).
    timelimit
        Seconds for the solver (and for the greedy restarts).
    seed
        Seed of the greedy restarts and of stratified shuffling.

    Returns
    -------
    CrossfoldResult or pandas.DataFrame
        For a DataFrame, Slideflow's result: the DataFrame given, with
        ``target_column`` set to ``"1"`` .. ``"k"`` on every row (same index
        and order; nothing is added when an error is raised). Otherwise a
        :class:`CrossfoldResult`.

    Raises
    ------
    AnnotationError
        A missing column, an empty value, a patient listed with two categories or two sites.
    ConfigError
        ``k < 2``, or fewer sites (or patients) than folds.
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ConfigError(f"k must be an integer >= 2, got {k!r}")
    ann, frame = _annotations(data)
    target = target_column or f"CV{k}"
    ann.require(category)
    pcol = _patient_column(ann, patient_column)
    sites = _site_column(ann, method, site_column)
    patients = _patients(ann, category, pcol, sites)
    if sites is not None:
        found = _site_folds(patients, k, method=method, timelimit=timelimit, seed=seed)
    else:
        found = _stratified_folds(patients, k, seed=seed)
    rows = [{**row, target: str(found.patient_fold[row[pcol]])} for row in ann.rows]
    if frame is not None:
        notes = "; ".join(found.notes) or "no notes"
        log.info("cross-folds by %r (%s): %s", category, found.method, notes)
        frame[target] = [row[target] for row in rows]
        return frame
    return found.result(rows, _fold_counts(patients, found.patient_fold, k))


def _annotations(data: Any) -> tuple[Annotations, Any | None]:
    """``data`` as annotations, and the DataFrame it is (``None`` when it is none)."""
    frame = _dataframe(data)
    if frame is not None:
        data = _frame_rows(frame)
    if isinstance(data, Annotations):
        return data, frame
    return load_annotations(data, slide_column=None), frame


def _patient_column(ann: Annotations, patient_column: str) -> str:
    """The column folds are made by: ``patient_column``, else the slide column."""
    if patient_column in ann.columns:
        return patient_column
    if ann.slide_column in ann.columns or "slide" in ann.columns:
        return ann.slide_column or "slide"
    raise AnnotationError(
        f"{ann.path or 'annotations'}: no {patient_column!r} or 'slide' column to split by "
        f"(columns: {ann.columns})"
    )


def _site_column(ann: Annotations, method: Method, site_column: str | None) -> str | None:
    """The site column when the folds preserve sites, else ``None``.

    ``milp`` and ``greedy`` need one.
    """
    if method != "stratified" and site_column is not None and site_column in ann.columns:
        return site_column
    if method in ("milp", "greedy"):
        raise AnnotationError(
            f"method={method!r} needs a site column {site_column!r} (columns: {ann.columns})"
        )
    return None


@dataclass
class _Folds:
    """Folds found by one method (what :class:`CrossfoldResult` reports of them)."""

    folds: list[list[str]]
    patient_fold: dict[str, int]
    objective: float
    optimal: bool
    method: str
    notes: list[str] = field(default_factory=list)

    def result(self, rows: list[dict[str, Any]], counts: dict[str, list[int]]) -> CrossfoldResult:
        return CrossfoldResult(
            rows=rows,
            folds=self.folds,
            patient_fold=self.patient_fold,
            counts=counts,
            objective=self.objective,
            optimal=self.optimal,
            method=self.method,
            notes=self.notes,
        )


def _site_folds(
    patients: Mapping[str, tuple[str, str]],
    k: int,
    *,
    method: Method,
    timelimit: float,
    seed: int,
) -> _Folds:
    """Site-preserved folds: every site in one fold, categories balanced."""
    values = sorted({v for v, _ in patients.values()})
    sites = sorted({s for _, s in patients.values()})
    if len(sites) < k:
        raise ConfigError(f"{len(sites)} sites cannot fill {k} site-preserved folds")
    vi = {v: n for n, v in enumerate(values)}
    si = {s: n for n, s in enumerate(sites)}
    counts = np.zeros((len(values), len(sites)), dtype=np.int64)
    for v, s in patients.values():
        counts[vi[v], si[s]] += 1
    assign, optimal, used, notes = _assign_sites(
        counts, k, method=method, timelimit=timelimit, seed=seed
    )
    site_fold = {s: int(assign[si[s]]) for s in sites}
    return _Folds(
        folds=[[s for s in sites if site_fold[s] == i] for i in range(k)],
        patient_fold={p: site_fold[s] + 1 for p, (_, s) in patients.items()},
        objective=crossfold_objective(counts, assign, k),
        optimal=optimal,
        method=used,
        notes=notes,
    )


def _assign_sites(
    counts: npt.NDArray[np.int64], k: int, *, method: Method, timelimit: float, seed: int
) -> tuple[npt.NDArray[np.int64], bool, str, list[str]]:
    """The MILP's assignment (greedy compared when it is not proven optimal), or the greedy one.

    Returns the fold of each site, whether it is proven optimal, the method, notes.
    """
    if not (method == "milp" or (method == "auto" and int(counts.sum()) * k <= MILP_MAX_ROWS)):
        return _greedy(counts, k, seed=seed, timelimit=timelimit), False, "greedy", []
    assign, optimal = _solve_milp(counts, k, timelimit)
    if optimal and assign is not None:
        return assign, True, "milp", []
    notes = ["the MILP solver stopped at its time limit; greedy search compared"]
    greedy = _greedy(counts, k, seed=seed, timelimit=min(timelimit, 5.0))
    if assign is None or crossfold_objective(counts, greedy, k) < crossfold_objective(
        counts, assign, k
    ):
        return greedy, False, "greedy", notes
    return assign, False, "milp", notes


def _stratified_folds(patients: Mapping[str, tuple[str, str]], k: int, *, seed: int) -> _Folds:
    """Patients shuffled within each category and dealt to the smallest fold."""
    if len(patients) < k:
        raise ConfigError(f"{len(patients)} patients cannot fill {k} folds")
    rng = random.Random(seed)
    patient_fold: dict[str, int] = {}
    sizes = [0] * k
    for v in sorted({v for v, _ in patients.values()}):
        group = sorted(p for p, (pv, _) in patients.items() if pv == v)
        rng.shuffle(group)
        for p in group:
            i = min(range(k), key=lambda j: (sizes[j], j))
            patient_fold[p] = i + 1
            sizes[i] += 1
    per = _fold_counts(patients, patient_fold, k)
    objective = float(sum((k * c - sum(cs)) ** 2 for cs in per.values() for c in cs))
    return _Folds(
        folds=[sorted(p for p, f in patient_fold.items() if f == i + 1) for i in range(k)],
        patient_fold=patient_fold,
        objective=objective,
        optimal=True,
        method="stratified",
    )


def _fold_counts(
    patients: Mapping[str, tuple[str, str]], patient_fold: Mapping[str, int], k: int
) -> dict[str, list[int]]:
    """``{category value: [patients in fold 1, ..., fold k]}``, values sorted."""
    counts = {v: [0] * k for v in sorted({v for v, _ in patients.values()})}
    for p, (v, _) in patients.items():
        counts[v][patient_fold[p] - 1] += 1
    return counts
