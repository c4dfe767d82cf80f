"""Benchmark of tilestream's stain normalisation against torchstain (numpy backend).

Realistic 256 px tissue tiles (cut from the two real slides of the shared test
data by ``_tiles.py``: the purple CMU H&E slide and the pink TCGA slide, JPEG
encoded then decoded, so the pixels carry real JPEG artefacts) are normalised
one by one by tilestream's :class:`~tilestream.norm.StainNormalizer` and by
``torchstain.normalizers.MacenkoNormalizer(backend="numpy")`` /
``ReinhardNormalizer(backend="numpy")``, in the same process, on the same
tiles, with the same reference fit (both fit one reference tile).

- Throughput: tiles per second of ``transform(tile)`` (ours) and
  ``normalize(tile)`` (torchstain; Macenko with ``stains=False``, so it does
  not build the H and E images it would otherwise return); best of
  ``--rounds`` interleaved rounds (ours, theirs, ours, ...), so load from
  other jobs on a shared machine does not favour one side.
- Agreement: the absolute difference of the output pixels (0-255) over all
  tiles. torchstain truncates to uint8 where tilestream rounds, so one grey
  level is the expected difference. For Macenko tilestream runs with
  ``black=0`` here (torchstain keeps black pixels in the stain estimate;
  tilestream's default ignores them).
- For information, tilestream alone: the batch path (``transform`` of a
  ``(n, 256, 256, 3)`` array), masked Reinhard, Vahadane and stain
  augmentation.

Run::

    python benchmarks/bench_norm.py                 # print the table
    python benchmarks/bench_norm.py --write-docs    # and update docs/benchmarks.md

Options: ``--tiles N`` (default 300), ``--rounds K`` (default 3).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from _docs import write_section  # noqa: E402
from _tiles import realistic_tiles  # noqa: E402

DOCS = REPO / "docs" / "benchmarks.md"
START = "<!-- bench_norm:start -->"
END = "<!-- bench_norm:end -->"


def decode(tiles: list[bytes]) -> list[np.ndarray]:
    import simplejpeg

    return [simplejpeg.decode_jpeg(t, colorspace="RGB") for t in tiles]


def best_rate(
    fn: Callable[[], object], n: int, rates: list[float], cpu: list[float] | None = None
) -> None:
    """Append ``n`` over the wall time of ``fn()`` to ``rates`` (and over its CPU time to ``cpu``)."""
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    t1, c1 = time.perf_counter(), time.process_time()
    rates.append(n / (t1 - t0))
    if cpu is not None:
        cpu.append(n / max(c1 - c0, 1e-9))


def run(n_tiles: int, rounds: int) -> tuple[list[list[str]], list[str], dict[str, str]]:
    import torchstain

    from tilestream.norm import StainNormalizer

    tiles = decode(realistic_tiles(n_tiles + 1, seed=7))
    reference, tiles = tiles[0], tiles[1:]
    batch = np.stack(tiles)
    n = len(tiles)

    peers = {
        "macenko": torchstain.normalizers.MacenkoNormalizer(backend="numpy"),
        "reinhard": torchstain.normalizers.ReinhardNormalizer(backend="numpy"),
    }
    ours = {
        "macenko": StainNormalizer("macenko", black=0),
        "reinhard": StainNormalizer("reinhard"),
    }
    for method in peers:
        peers[method].fit(reference)
        ours[method].fit(reference)

    def theirs_fn(method: str) -> Callable[[np.ndarray], np.ndarray]:
        peer = peers[method]
        if method == "macenko":
            return lambda t: peer.normalize(t, stains=False)[0]
        return lambda t: peer.normalize(t)

    rows: list[list[str]] = []
    notes: list[str] = []
    for method in ("macenko", "reinhard"):
        norm, peer_fn = ours[method], theirs_fn(method)
        rate_ours: list[float] = []
        rate_theirs: list[float] = []
        cpu_ours: list[float] = []
        cpu_theirs: list[float] = []
        for _ in range(rounds):
            best_rate(lambda: [norm.transform(t) for t in tiles], n, rate_ours, cpu_ours)  # noqa: B023
            best_rate(lambda: [peer_fn(t) for t in tiles], n, rate_theirs, cpu_theirs)  # noqa: B023
        diffs = np.concatenate(
            [np.abs(norm.transform(t).astype(np.int16) - peer_fn(t)).ravel() for t in tiles]
        )
        r_ours, r_theirs = max(rate_ours), max(rate_theirs)
        rows.append(
            [
                method,
                f"{r_ours:,.0f}",
                f"{r_theirs:,.0f}",
                f"{r_ours / r_theirs:.2f}x",
                f"{max(cpu_ours) / max(cpu_theirs):.2f}x",
                f"{int(diffs.max())}",
                f"{diffs.mean():.3f}",
                f"{(diffs > 1).mean() * 100:.3f} %",
            ]
        )
        if norm.skipped:
            notes.append(f"{method}: tilestream returned {norm.skipped} tile(s) unchanged")

    extra: list[list[str]] = []
    for label, norm, fn in [
        ("macenko, batch of all tiles", StainNormalizer("macenko"), "batch"),
        ("reinhard, batch of all tiles", StainNormalizer("reinhard"), "batch"),
        ("reinhard_mask", StainNormalizer("reinhard_mask"), "single"),
        ("vahadane", StainNormalizer("vahadane"), "single"),
        ("macenko stain augmentation", StainNormalizer("macenko"), "augment"),
        ("reinhard stain augmentation", StainNormalizer("reinhard"), "augment"),
    ]:
        rates: list[float] = []
        rng = np.random.default_rng(0)
        for _ in range(rounds if "vahadane" not in label else 1):
            if fn == "batch":
                best_rate(lambda: norm.transform(batch), n, rates)  # noqa: B023
            elif fn == "augment":
                best_rate(lambda: [norm.augment(t, rng) for t in tiles], n, rates)  # noqa: B023
            else:
                best_rate(lambda: [norm.transform(t) for t in tiles], n, rates)  # noqa: B023
        extra.append([label, f"{max(rates):,.0f}"])

    table = [
        "| method | tilestream tiles/s | torchstain tiles/s | ratio | ratio per CPU second "
        "| max abs diff | mean abs diff | pixels > 1 apart |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
        "| tilestream only | tiles/s |",
        "|---|---:|",
        *("| " + " | ".join(r) + " |" for r in extra),
    ]
    versions = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torchstain": importlib.metadata.version("torchstain"),
        "cores": str(os.cpu_count()),
        "load": f"{os.getloadavg()[0]:.1f}",
        "tiles": str(n),
    }
    return [table], notes, versions


def section(table: list[str], notes: list[str], versions: dict[str, str], command: str) -> str:
    note_text = "".join(f"- {n}\n" for n in notes)
    return (
        f"{START}\n"
        "## Stain normalisation (`benchmarks/bench_norm.py`)\n\n"
        f"{versions['tiles']} realistic 256 px tissue tiles (from both real slides, via "
        "`benchmarks/_tiles.py`) normalised one at a time by tilestream and by torchstain's "
        "numpy backend in the same run, with the same reference fit (one tissue tile). "
        "Rates are the best of interleaved rounds; the ratio is tilestream's rate over "
        "torchstain's, in wall time and per CPU second of the process (steadier on a shared, "
        "loaded machine; it also charges torchstain for any BLAS threads it uses). Outputs are compared pixel by pixel: torchstain truncates to uint8, "
        "tilestream rounds, so up to one grey level apart is expected; tolerance (also checked "
        "by `tests/norm/test_norm_real.py::test_matches_torchstain`): max 1 grey level. Macenko "
        "runs with `black=0` here, torchstain's treatment of black pixels.\n\n"
        f"Command (from the repository root):\n\n```\n{command}\n```\n\n"
        f"Machine: {versions['cores']} shared cores (load average {versions['load']} at the end "
        f"of the run). Versions: Python {versions['python']}, numpy {versions['numpy']}, "
        f"torchstain {versions['torchstain']}.\n\n" + "\n".join(table) + "\n\n"
        "How: uint8 lookup tables for sRGB decoding and optical density, float32 throughout, "
        "3-column matrix products in 4096-pixel blocks (one big product goes to a multi-threaded "
        "BLAS call that is slower for 3 columns), Macenko's least squares as one 3x3 matrix "
        "(pseudo-inverse, target scaling and target stains folded), its angular percentiles "
        "found on slopes with a partition (arctan only for the two order statistics), "
        "Reinhard's LAB affine map folded into the LAB-to-RGB matrix.\n"
        + (f"\nNotes:\n\n{note_text}" if note_text else "")
        + f"{END}\n"
    )


def write_docs(text: str) -> None:
    write_section(text, START, END, docs=DOCS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiles", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    tables, notes, versions = run(args.tiles, args.rounds)
    command = "python benchmarks/bench_norm.py " + " ".join(
        a for a in (argv if argv is not None else sys.argv[1:])
    )
    text = section(tables[0], notes, versions, command.strip())
    print(text)
    if args.write_docs:
        write_docs(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
