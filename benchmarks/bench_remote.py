"""Object storage end to end: extraction and a training epoch from S3 against local disk.

A real S3 server (SeaweedFS on loopback, ``_remote_server.py``) holds the
20,000 px synthetic Aperio 20x slide of ``bench_extract.py`` (240 px JPEG tiles,
half real tissue) and the TFRecords of ``bench_loaders.py`` (realistic 256 px
tiles). Every remote client reaches it through a TCP proxy
(``tilestream.testing.faultproxy.FaultProxy``) that adds 0 ms or 20 ms before each
request (one wait per round trip) and counts requests and bytes. Side by side in
one run, each contender in a fresh process, rounds alternating, medians reported:

* **extraction** (256 px / 128 um, two threads, ``_remote_extract.py``): tilestream
  on the local file; tilestream from ``s3://`` (outputs local), and with the
  outputs to ``s3://`` too; peers: tiffslide over fsspec reading the same kept
  tiles and encoding them, and download-then-extract (both parts timed); the
  floor (every stored tile under a kept tile decoded once and every output tile
  encoded once, ``_floors.py``) as its own row. Read amplification is the bytes
  received from the store over the bytes of the stored tiles under the kept tiles
  (from the TIFF's tile byte counts);
* **training** (``_remote_loaders.py``): one epoch of ``TileDataset`` (DataLoader,
  2 workers, batches of 64) over the local files and over their ``s3://`` URLs;
  ``tf.data`` over the same URLs where TensorFlow can read ``s3://``.

Targets (issue 19): extraction at least 0.8x local at 0 ms and 0.5x at 20 ms, read
amplification at most 1.2, tilestream ahead of both peers; the epoch at least 0.9x
local at 0 ms and 0.7x at 20 ms with at least 20 records per request.

Usage::

    python benchmarks/bench_remote.py --quick            # a smoke run (~1 min)
    python benchmarks/bench_remote.py --write-docs       # the full run (~6 min)
    python benchmarks/bench_remote.py --cores split --write-docs   # the store on its own core (~9 min)

With ``--cores split`` SeaweedFS and the proxies run on one core and every contender,
local or remote, on the others: as where the store has machines of its own, the
client's CPU is not shared with the store's (its section in the docs is separate).

Results go to ``benchmarks/_work/bench_remote.json``; ``--write-docs`` writes the
"Object storage" section of ``docs/benchmarks.md`` (``--from-json PATH --write-docs``
writes it from saved results without running again).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _extract_runs import GEOMETRIES, WORK, coords_copy, make_slide, median
from _floors import measure_floors_apart
from _remote_server import RemoteStore

Result = dict[str, Any]
TILE_PX, TILE_UM = 256, 128.0
GEOMETRY = "aperio-20x"


def _child_main() -> None:
    """Run one contender from the JSON spec on stdin; print its result (or error) as JSON."""
    spec = json.loads(sys.stdin.read())
    from _remote_extract import NotAvailable, run_contender
    from _remote_loaders import run_loader

    if spec.get("options"):
        # Imports are not work (as in bench_extract.py): s3fs and botocore take ~0.7 s to
        # import, once per worker process, not once per slide. Nor is the S3 client: botocore
        # loads its service models (~0.12 CPU s) once per process. Made here, it is what a
        # worker that has read one slide already holds (no request is sent).
        import s3fs  # noqa: F401

        from tilestream.storage import store_for

        store, key = store_for(spec.get("url") or spec["urls"][0], spec["options"])
        store.fs.url(f"{store.root}/{key}")

    try:
        if spec["which"].startswith(("records", "tfdata")):
            result = run_loader(spec)
        else:
            result = run_contender(spec)
    except NotAvailable as exc:
        result = {"error": str(exc)}
    except Exception as exc:  # reported in the table, never hidden
        result = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
    print(json.dumps(result))


def _scrub(text: str, secrets: list[str]) -> str:
    """``text`` without the store's keys or this checkout's path (errors go into the docs)."""
    text = text.replace(str(Path(__file__).resolve().parent.parent), "<repo>")
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def pin_store(store: RemoteStore) -> set[int]:
    """``--cores split``: SeaweedFS and this process (the proxies) on the last core.

    Returns the other cores, the contenders' (local and remote alike): as where the store
    runs on machines of its own, the client's CPU is not shared with the store's.
    """
    import psutil

    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit("--cores split needs at least two cores")
    mine = {cores[-1]}
    processes = [psutil.Process(), psutil.Process(store.server_pid())]
    processes += processes[1].children(recursive=True)
    for process in processes:
        for thread in process.threads():  # every thread: an affinity is per thread
            os.sched_setaffinity(thread.id, mine)
    return set(cores[:-1])


def run_child(
    spec: dict[str, Any],
    store: RemoteStore | None,
    ms: int | None,
    *,
    count: bool = True,
    cores: set[int] | None = None,
) -> Result:
    """One contender in a fresh process; with the store side's CPU seconds and its traffic.

    ``count=False``: a run that does not go through the proxy of ``ms`` (no traffic).
    ``cores``: the CPUs the contender runs on (all of this process's by default).
    """
    if ms is None:
        store = None  # a local contender: no store side to count
    if store is not None and ms is not None:
        store.reset(ms)
    server0 = store.server_cpu() if store is not None else 0.0
    proxy0 = time.process_time()  # the proxies' threads run in this process
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--child"],
        input=json.dumps(spec),
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None,
    )
    whole = time.perf_counter() - t0
    secrets = []
    if store is not None:
        secrets = [store.server.secret_key, store.server.access_key]
    if proc.returncode != 0 or not proc.stdout.strip():
        lines = proc.stderr.strip().splitlines()
        return {"error": _scrub(lines[-1] if lines else f"exit {proc.returncode}", secrets)}
    result: Result = json.loads(proc.stdout.strip().splitlines()[-1])
    if "error" in result:
        result["error"] = _scrub(result["error"], secrets)
        return result
    result["process_seconds"] = whole
    if store is not None:
        result["store_cpu_seconds"] = store.server_cpu() - server0 + time.process_time() - proxy0
        if ms is not None and count:
            result["traffic"] = store.traffic(ms)
    return result


def summarise(runs: list[Result]) -> Result:
    """The median run's figures (seconds, CPU seconds, traffic); an error if none ran."""
    good = [r for r in runs if "error" not in r]
    if not good:
        return {"error": runs[0]["error"] if runs else "not run"}
    ordered = sorted(good, key=lambda r: r["seconds"])
    out = dict(ordered[(len(ordered) - 1) // 2])
    out["seconds"] = median([r["seconds"] for r in good])
    out["cpu_seconds"] = median([r["cpu_seconds"] for r in good])
    if "store_cpu_seconds" in out:
        out["store_cpu_seconds"] = median([r.get("store_cpu_seconds", 0.0) for r in good])
    out["rounds"] = len(good)
    out["all_seconds"] = [r["seconds"] for r in good]
    return out


def _rounds(
    plan: list[tuple[str, dict[str, Any], int | None]],
    store: RemoteStore,
    args: argparse.Namespace,
    first: dict[str, Result] | None = None,
) -> dict[str, Result]:
    """Run every (label, spec, latency) of ``plan`` ``rounds`` times, order rotating; medians."""
    results: dict[str, list[Result]] = {label: [] for label, _, _ in plan}
    for label, r in (first or {}).items():
        results[label].append(r)
    for round_ in range(args.rounds):
        shift = round_ % len(plan)
        for label, spec, ms in plan[shift:] + plan[:shift]:
            if len(results[label]) > round_:
                continue  # the round-0 run made before the others
            if results[label] and "error" in results[label][0]:
                continue  # not available in this build: once is enough
            spec = dict(spec)
            if "out_url" in spec:  # a fresh prefix each run: no resume
                spec["out_url"] = f"{spec['out_url']}/r{round_}"
            result = run_child(spec, store, ms, count=ms != 0, cores=args.client_cores)
            results[label].append(result)
            if "error" in result:
                print(f"  {label}: not run: {result['error']}", flush=True)
            else:
                print(
                    f"  round {round_ + 1} {label}: {result['tiles']} tiles in "
                    f"{result['seconds']:.2f} s, {result['cpu_seconds']:.1f} CPU s, "
                    f"{result.get('traffic', {}).get('requests', '-')} requests",
                    flush=True,
                )
    summaries = {label: summarise(runs) for label, runs in results.items()}
    for label, spec, ms in plan:
        if ms == 0 and "error" not in summaries[label]:
            summaries[label]["traffic"] = _count(spec, store, args.client_cores)
    return summaries


def _count(spec: dict[str, Any], store: RemoteStore, cores: set[int] | None) -> dict[str, int]:
    """The traffic of a 0 ms contender: one more run, untimed, through the 0 ms proxy."""
    spec = {**spec, "options": store.options(0, counted=True)}
    if "out_url" in spec:
        spec["out_url"] = f"{spec['out_url']}/counted"
    result = run_child(spec, store, 0, cores=cores)
    if "error" in result:
        raise SystemExit(f"the counting run failed: {result['error']}")
    return dict(result["traffic"])


def bench_extraction(store: RemoteStore, slide: Path, args: argparse.Namespace) -> Result:
    """The extraction contenders; medians over ``args.rounds``."""
    from _remote_extract import needed_stored_bytes

    url = store.url(f"slides/{slide.name}")
    base = {"slide": str(slide), "url": url, "tile_px": TILE_PX, "tile_um": TILE_UM}
    local = {**base, "which": "local"}
    print("extraction: tilestream on local disk (round 1 first: its tiles are the others')")
    first = run_child(local, None, None, cores=args.client_cores)
    if "error" in first:
        raise SystemExit(f"the local extraction failed: {first['error']}")
    coords = coords_copy(slide, TILE_PX, TILE_UM)
    base["coords"] = str(coords)
    plan: list[tuple[str, dict[str, Any], int | None]] = [("local", local, None)]
    for ms in args.latencies:
        opts = store.options(ms)
        for which in args.extract:
            spec = {**base, "which": which, "options": opts}
            if which == "s3-out":
                spec["out_url"] = store.url(f"out/{ms}ms")
                spec["direct_options"] = store.server.storage_options
            plan.append((f"{which}@{ms}", spec, ms))
    rows = _rounds(plan, store, args, {"local": first})
    return {
        "rows": rows,
        "coords": str(coords),
        "needed": needed_stored_bytes(slide, coords),
        "slide_bytes": slide.stat().st_size,
        "kept_tiles": first["tiles"],
    }


def bench_training(store: RemoteStore, paths: list[Path], args: argparse.Namespace) -> Result:
    """One epoch per contender and round; medians over ``args.rounds``."""
    urls = [store.url(f"records/{p.name}") for p in paths]
    plan: list[tuple[str, dict[str, Any], int | None]] = [
        ("records-local", {"which": "records-local", "paths": [str(p) for p in paths]}, None)
    ]
    for ms in args.latencies:
        for which in ("records-s3", "tfdata-s3"):
            if which == "tfdata-s3" and ms != args.latencies[0]:
                continue  # tf.data is the peer at the first latency only (time budget)
            spec = {"which": which, "urls": urls, "options": store.options(ms)}
            plan.append((f"{which}@{ms}", spec, ms))
    rows = _rounds(plan, store, args)
    return {
        "rows": rows,
        "files": len(paths),
        "bytes": sum(p.stat().st_size for p in paths),
    }


def _upload(store: RemoteStore, slide: Path, records: list[Path]) -> float:
    t0 = time.perf_counter()
    store.upload(slide, f"slides/{slide.name}")
    for path in records:
        store.upload(path, f"records/{path.name}")
        index = path.with_suffix(".index.npz")
        if index.is_file():
            store.upload(index, f"records/{index.name}")
    return time.perf_counter() - t0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20000, help="slide side in level-0 pixels")
    parser.add_argument("--tiles", type=int, default=20000, help="tiles in the TFRecords")
    parser.add_argument("--files", type=int, default=20, help="TFRecord files")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; medians reported")
    parser.add_argument(
        "--latencies", default="0,20", help="added round-trip latencies in ms, comma-separated"
    )
    parser.add_argument(
        "--extract",
        default="s3,s3-out,tiffslide,download",
        help="remote extraction contenders, comma-separated",
    )
    parser.add_argument("--skip", default="", help="'extraction' or 'training' to leave out")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 6,000 px slide, 2,000 tiles, 1 round"
    )
    parser.add_argument(
        "--cores",
        choices=("shared", "split"),
        default="shared",
        help="shared: the store and the contenders share every core; split: the store on "
        "one core, each contender on the others",
    )
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument(
        "--from-json",
        type=Path,
        metavar="PATH",
        help="no run: print (and with --write-docs write) the report of saved results",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.tiles, args.files, args.rounds = 6000, 2000, 4, 1
    args.latencies = [int(x) for x in str(args.latencies).split(",") if x]
    args.extract = [x for x in str(args.extract).split(",") if x]
    args.skip = {x for x in str(args.skip).split(",") if x}
    args.client_cores = None
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        _child_main()
        return
    from _remote_loaders import prepare_records
    from _remote_report import print_report, write_docs

    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        print_report(saved)
        if args.write_docs:
            write_docs(saved)
        return
    load_start = os.getloadavg()[0]
    t0 = time.perf_counter()
    slide = make_slide(args.size, GEOMETRIES[GEOMETRY])
    records = prepare_records(WORK / "remote", args.tiles, args.files)
    kept = ("size", "tiles", "files", "rounds", "latencies", "extract", "quick", "cores")
    results: Result = {"args": {k: getattr(args, k) for k in kept}}
    with RemoteStore(tuple(args.latencies)) as store:
        results["upload_seconds"] = _upload(store, slide, records)
        print(
            f"uploaded the slide and {len(records)} TFRecords in {results['upload_seconds']:.0f} s"
        )
        if args.cores == "split":
            args.client_cores = pin_store(store)
            print(
                f"the store on core(s) {sorted(set(os.sched_getaffinity(0)))}, contenders on "
                f"{sorted(args.client_cores)}"
            )
        if "extraction" not in args.skip:
            results["extraction"] = bench_extraction(store, slide, args)
        if "training" not in args.skip:
            results["training"] = bench_training(store, records, args)
    if "extraction" in results:
        # Measured with the store stopped (its background work once doubled them), on the
        # contenders' cores.
        print("extraction: the floors")
        if args.client_cores:
            os.sched_setaffinity(0, args.client_cores)
        coords = Path(results["extraction"]["coords"])
        results["extraction"]["floors"] = measure_floors_apart(slide, coords, TILE_PX)
    results["load"] = [load_start, os.getloadavg()[0]]
    results["wall_seconds"] = time.perf_counter() - t0
    (WORK / "bench_remote.json").write_text(json.dumps(results, indent=1))
    print_report(results)
    if args.write_docs:
        write_docs(results)


if __name__ == "__main__":
    main()
