"""The tables, verdicts and ``docs/benchmarks.md`` section of ``bench_remote.py``."""

from __future__ import annotations

import os
import platform
import subprocess
from typing import Any

from _docs import write_section

__all__ = ["END", "SPLIT_END", "SPLIT_START", "START", "print_report", "section", "write_docs"]

START = "<!-- bench_remote:start -->"
END = "<!-- bench_remote:end -->"
#: The markers of the ``--cores split`` run's section.
SPLIT_START = "<!-- bench_remote_split:start -->"
SPLIT_END = "<!-- bench_remote_split:end -->"
MB = 1e6

Result = dict[str, Any]

_EXTRACT_NAMES = {
    "local": "tilestream, slide on local disk",
    "s3": "tilestream, slide in S3 (outputs local)",
    "s3-out": "tilestream, slide in S3, outputs to S3",
    "tiffslide": "tiffslide over fsspec, the same tiles, 2 processes",
    "download": "download, then tilestream locally",
}
_TRAIN_NAMES = {
    "records-local": "`TileDataset`, local files",
    "records-s3": "`TileDataset`, `s3://` URLs",
    "tfdata-s3": "`tf.data.TFRecordDataset`, `s3://` URLs",
}


def _split(label: str) -> tuple[str, int | None]:
    which, _, ms = label.partition("@")
    return which, (int(ms) if ms else None)


def _rate(r: Result) -> float:
    return float(r["tiles"] / r["seconds"]) if r.get("seconds") else 0.0


def _latency(ms: int | None) -> str:
    return "local" if ms is None else f"{ms} ms"


def _seconds(r: Result) -> str:
    """The median seconds, and the range over the rounds when there were several."""
    runs = r.get("all_seconds") or []
    if len(runs) < 2:
        return f"{r['seconds']:.2f}"
    return f"{r['seconds']:.2f} ({min(runs):.1f}-{max(runs):.1f})"


def _traffic(r: Result) -> tuple[str, str, str]:
    t = r.get("traffic")
    if not t:
        return "-", "-", "-"
    up = f"{t['bytes_up'] / MB:,.1f}"
    return f"{t['requests']:,}", f"{t['bytes_down'] / MB:,.1f}", up


def _outputs(which: str, r: Result, local: Result) -> str:
    if which == "tiffslide":
        return "re-encoded (its own)"
    if which == "local":
        return "reference"
    if not r.get("digest") or not local.get("digest"):
        return "not compared"
    return "identical" if r["digest"] == local["digest"] else "**differ**"


def extraction_table(ex: Result) -> list[str]:
    rows = ex["rows"]
    local = rows["local"]
    needed = ex["needed"]["bytes"]
    lines = [
        "| contender | latency | tiles | seconds, median (range) | tiles/s | x local | CPU s "
        "| store CPU s | requests | MB received | MB sent | read amplification | outputs |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for label, r in rows.items():
        which, ms = _split(label)
        name = _EXTRACT_NAMES.get(which, which)
        if "error" in r:
            lines.append(f"| {name} | {_latency(ms)} | not run: {r['error'][:160]} |" + " |" * 10)
            continue
        if which == "download":
            name += f" ({r['download_seconds']:.1f} s + {r['extract_seconds']:.1f} s)"
        requests, down, up = _traffic(r)
        amp = "-"
        if r.get("traffic") and needed:
            amp = f"{r['traffic']['bytes_down'] / needed:.2f}"
        store = f"{r['store_cpu_seconds']:.1f}" if "store_cpu_seconds" in r else "-"
        lines.append(
            f"| {name} | {_latency(ms)} | {r['tiles']:,} | {_seconds(r)} | "
            f"{_rate(r):,.0f} | {_rate(r) / _rate(local):.2f} | {r['cpu_seconds']:.1f} | "
            f"{store} | {requests} | {down} | {up} | {amp} | {_outputs(which, r, local)} |"
        )
    floors, tiles = ex["floors"], ex["kept_tiles"]
    for key, text in (
        ("decode", "floor: every needed stored tile decoded once"),
        ("decode_encode", "floor: decoded once + every tile encoded once"),
        (
            "entropy",
            "floor, lossless assembly: every needed stored tile entropy-decoded once "
            "+ every tile entropy-encoded once",
        ),
    ):
        if key not in floors["one_core"]:
            continue  # the DCT-domain extension was not built
        one, two = floors["one_core"][key], floors["two_cores"][key]
        lines.append(
            f"| {text} | - | {tiles:,} | {one:.2f} / {two:.2f} | "
            f"{tiles / one:,.0f} / {tiles / two:,.0f} | {tiles / two / _rate(local):.2f} |"
            + " - |"
            * 7
        )
    return lines


def training_table(tr: Result) -> list[str]:
    rows = tr["rows"]
    local = rows["records-local"]
    lines = [
        "| contender | latency | tiles | seconds, median (range) | tiles/s | x local | CPU s "
        "| store CPU s | requests | records per request | MB received | bytes received / file bytes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, r in rows.items():
        which, ms = _split(label)
        name = _TRAIN_NAMES.get(which, which)
        if "error" in r:
            lines.append(f"| {name} | {_latency(ms)} | not run: {r['error'][:200]} |" + " |" * 9)
            continue
        t = r.get("traffic")
        per = f"{r['tiles'] / t['requests']:.1f}" if t and t["requests"] else "-"
        amp = f"{t['bytes_down'] / tr['bytes']:.2f}" if t else "-"
        requests, down, _ = _traffic(r)
        store = f"{r['store_cpu_seconds']:.1f}" if "store_cpu_seconds" in r else "-"
        ratio = _rate(r) / _rate(local) if "error" not in local else 0.0
        lines.append(
            f"| {name} | {_latency(ms)} | {r['tiles']:,} | {_seconds(r)} | "
            f"{_rate(r):,.0f} | {ratio:.2f} | {r['cpu_seconds']:.1f} | {store} | {requests} | "
            f"{per} | {down} | {amp} |"
        )
    return lines


def _verdict(ok: bool) -> str:
    return "met" if ok else "**not met**"


def extraction_verdicts(ex: Result) -> list[str]:
    rows, needed = ex["rows"], ex["needed"]["bytes"]
    local = _rate(rows["local"])
    lines = []
    for ms, target in ((0, 0.8), (20, 0.5)):
        r = rows.get(f"s3@{ms}")
        if r is None:
            continue
        if "error" in r:
            lines.append(
                f"* At least {target}x local at {ms} ms: not measured ({r['error'][:120]})."
            )
            continue
        ratio = _rate(r) / local
        lines.append(
            f"* At least {target}x local at {ms} ms: {_verdict(ratio >= target)}, {ratio:.2f}x."
        )
        amp = r["traffic"]["bytes_down"] / needed
        lines.append(
            f"* Read amplification at most 1.2 at {ms} ms: {_verdict(amp <= 1.2)}, {amp:.2f} "
            f"({r['traffic']['bytes_down'] / MB:,.1f} MB received for "
            f"{needed / MB:,.1f} MB of needed stored tiles)."
        )
        peers = {p: rows.get(f"{p}@{ms}") for p in ("tiffslide", "download")}
        for peer, pr in peers.items():
            if pr is None or "error" in pr:
                why = pr["error"][:120] if pr else "not in this run"
                lines.append(f"* Ahead of {peer} at {ms} ms: not measured ({why}).")
            else:
                x = _rate(r) / _rate(pr)
                lines.append(f"* Ahead of {peer} at {ms} ms: {_verdict(x > 1)}, {x:.2f}x its rate.")
    return lines


def _split_cores(results: Result) -> bool:
    """Whether ``results`` come from a ``--cores split`` run."""
    return bool(results["args"].get("cores") == "split")


def extraction_notes(ex: Result, *, split: bool = False) -> list[str]:
    """What the CPU columns say about the S3 rows (facts computed from the table)."""
    rows = ex["rows"]
    local = rows["local"]
    lines = []
    for ms in (0, 20):
        r = rows.get(f"s3@{ms}")
        if r is None or "error" in r:
            continue
        store = f"SeaweedFS {'with the proxy ' if ms else ''}{r['store_cpu_seconds']:.1f} CPU s"
        if split:
            bound = (
                f"{store} on a core of its own. Were both runs limited by the client's CPU "
                f"alone, the S3 run would reach about {local['cpu_seconds'] / r['cpu_seconds']:.2f}x"
                " local."
            )
        else:
            together = r["cpu_seconds"] + r["store_cpu_seconds"]
            bound = (
                f"{store} on the same two cores. Client and store together: {together:.1f} CPU "
                f"s where the local run needed {local['cpu_seconds']:.1f}: were both runs limited "
                "by CPU alone on the same cores (here shared with the store and with other jobs), "
                f"the S3 run would reach about {local['cpu_seconds'] / together:.2f}x local."
            )
        lines.append(
            f"* At {ms} ms tilestream's process used {r['cpu_seconds'] - local['cpu_seconds']:+.1f} "
            f"CPU s against the local run ({r['cpu_seconds']:.1f} against "
            f"{local['cpu_seconds']:.1f}: HTTP, the ranged reads and their copies); "
            f"{r['traffic']['requests']:,} requests, "
            f"{r['traffic']['bytes_down'] / r['traffic']['requests'] / MB:.2f} MB each on average, "
            f"over {r['traffic']['connections']} connections; {bound}"
        )
    runs = local.get("all_seconds") or []
    if len(runs) > 1:
        lines.append(
            f"* The same local extraction took {min(runs):.2f}-{max(runs):.2f} s over the rounds "
            "on this shared machine: differences smaller than that range are noise."
        )
    return lines


def training_verdicts(tr: Result) -> list[str]:
    rows = tr["rows"]
    local = rows["records-local"]
    lines = []
    for ms, target in ((0, 0.9), (20, 0.7)):
        r = rows.get(f"records-s3@{ms}")
        if r is None:
            continue
        if "error" in r or "error" in local:
            why = r.get("error") or local.get("error")
            lines.append(
                f"* `TileDataset` at least {target}x local at {ms} ms: not measured ({why[:120]})."
            )
            continue
        ratio = _rate(r) / _rate(local)
        per = r["tiles"] / max(1, r["traffic"]["requests"])
        lines.append(
            f"* `TileDataset` at least {target}x local at {ms} ms: {_verdict(ratio >= target)}, "
            f"{ratio:.2f}x."
        )
        lines.append(
            f"* At least 20 records per request at {ms} ms: {_verdict(per >= 20)}, {per:.1f}."
        )
    return lines


def training_notes(tr: Result, *, split: bool = False) -> list[str]:
    """What the CPU columns say about the S3 epochs (facts computed from the table)."""
    rows = tr["rows"]
    local = rows["records-local"]
    lines = []
    for ms in (0, 20):
        r = rows.get(f"records-s3@{ms}")
        if r is None or "error" in r or "error" in local:
            continue
        client, store = r["cpu_seconds"], r["store_cpu_seconds"]
        where = "on a core of its own" if split else "on the same two cores"
        text = (
            f"* At {ms} ms the loader's processes used {client - local['cpu_seconds']:+.1f} CPU s "
            f"against the local epoch ({client:.1f} against {local['cpu_seconds']:.1f}), and "
            f"SeaweedFS{' with the proxy' if ms else ''} {store:.1f} CPU s {where}. "
        )
        if split:
            text += (
                "Were both epochs limited by the client's CPU alone, the S3 epoch would reach "
                f"about {local['cpu_seconds'] / client:.2f}x local."
            )
        else:
            text += (
                "The local epoch keeps both cores busy decoding, so every CPU second the store "
                "spends is taken from the decoders: with no client overhead at all the S3 epoch "
                f"could reach about {local['cpu_seconds'] / (local['cpu_seconds'] + store):.2f}x "
                "local here (see the `--cores split` run for the store off the client's cores)."
            )
        lines.append(text)
    runs = local.get("all_seconds") or []
    if len(runs) > 1:
        lines.append(
            f"* The same local epoch took {min(runs):.2f}-{max(runs):.2f} s over the rounds."
        )
    return lines


def _versions() -> str:
    import s3fs

    import tilestream
    from tilestream.testing.seaweedfs import weed_binary

    parts = [f"Python {platform.python_version()}", f"tilestream {tilestream.__version__}"]
    parts.append(f"s3fs {s3fs.__version__}")
    try:
        import tiffslide

        parts.append(f"tiffslide {getattr(tiffslide, '__version__', '?')}")
    except ImportError:
        pass
    weed = weed_binary()
    if weed:
        out = subprocess.run([weed, "version"], capture_output=True, text=True, check=False)
        # "version 8000GB 4.48 pypi linux amd64": the first dotted number
        words = out.stdout.split()
        version = next((w for w in words if "." in w and w[:1].isdigit()), None)
        if version:
            parts.append(f"SeaweedFS {version}")
    return ", ".join(parts)


def _command(args: dict[str, Any]) -> str:
    cmd = ["python benchmarks/bench_remote.py"]
    if args.get("quick"):
        cmd.append("--quick")
    else:
        for key, default in (("size", 20000), ("tiles", 20000), ("files", 20), ("rounds", 3)):
            if args[key] != default:
                cmd.append(f"--{key} {args[key]}")
    if args["latencies"] != [0, 20]:
        cmd.append("--latencies " + ",".join(map(str, args["latencies"])))
    if args.get("cores", "shared") != "shared":
        cmd.append(f"--cores {args['cores']}")
    return " ".join([*cmd, "--write-docs"])


def section(results: Result) -> str:
    args = results["args"]
    ex, tr = results.get("extraction"), results.get("training")
    split = _split_cores(results)
    if split:
        title = "## Object storage, the store on a core of its own (`--cores split`)"
        cores = (
            "SeaweedFS and the proxies run on one core and every contender, local or remote, "
            "on the other (`sched_setaffinity`), as where the store has machines of its own: "
            "the client's CPU is not shared with the store's, and local and remote contenders "
            "have the same one core. `store CPU s` is SeaweedFS's (and the proxy's at 20 ms), "
            "on its own core."
        )
    else:
        title = "## Object storage: extraction and training from S3 (`benchmarks/bench_remote.py`)"
        cores = (
            "`store CPU s` is SeaweedFS's (and the proxy's at 20 ms) during the run: the store "
            "shares the 2 cores with the client, which a real deployment does not (the "
            "`--cores split` section below gives it a core of its own)."
        )
    lines = [
        SPLIT_START if split else START,
        title,
        "",
        "A real S3 server, SeaweedFS, on loopback. At 20 ms every remote client reaches it "
        "through a TCP proxy (`tilestream.testing.faultproxy.FaultProxy`) that waits 20 ms "
        "before forwarding each request (one wait per round trip) and counts requests and bytes "
        "(HTTP headers included); at 0 ms the clients talk to the store directly (the proxy is "
        "Python on the same two cores), and their requests and bytes come from one more, untimed "
        "run through a 0 ms proxy. Each contender runs in a fresh process, timed after its imports (as "
        "in `bench_extract.py`; s3fs and botocore take ~0.7 s to import, once per worker "
        "process) and after botocore has loaded its S3 models (~0.12 CPU s, also once per "
        "process: an S3 client is made, no request sent; the tiffslide peer's own processes "
        "make theirs inside the timing); contenders alternate over "
        f"{args['rounds']} round(s) and the **median** round is shown. `CPU s` is the client's "
        f"(its process, threads and child processes). {cores}",
        "",
    ]
    if ex is not None:
        lines += [
            f"### Extraction: the {args['size']:,} x {args['size']:,} Aperio 20x slide "
            f"({ex['slide_bytes'] / MB:,.0f} MB), 256 px / 128 um, two threads",
            "",
            "Kept tiles are assembled losslessly from the stored 240 px JPEG tiles (the "
            "default on this geometry). tiffslide reads the boxes tilestream kept (no tissue "
            "detection of its own) with `read_region` and encodes each tile (simplejpeg q95 "
            "4:4:4, tilestream's encoder) into a TFRecord, over two processes, with fsspec's "
            "defaults (s3fs's 50 MiB read-ahead blocks). Download-then-extract fetches the "
            "object with tilestream's store (16 MiB ranged GETs, 8 in flight) and extracts "
            "the local copy; its seconds are the sum. Read amplification: bytes received over "
            f"the {ex['needed']['bytes'] / MB:,.1f} MB of the {ex['needed']['tiles']:,} "
            "stored tiles under the kept tiles (the TIFF's tile byte counts); what is received "
            "also holds the TIFF header and tile tables, the low-resolution level read for the "
            "tissue mask, and the HTTP headers. Floor rows: one core / two processes, codec "
            "calls only (`_floors.py`); their `x local` is the two-process floor's rate over "
            "the local run's. `outputs`: the SHA-256 of the TFRecords against the local run's.",
            "",
            *extraction_table(ex),
            "",
            "Targets (issue 19), on the `tilestream, slide in S3 (outputs local)` rows:",
            "",
            *extraction_verdicts(ex),
            "",
            *extraction_notes(ex, split=split),
            "",
        ]
    if tr is not None:
        lines += [
            f"### Training: one epoch of {args['tiles']:,} tiles from {tr['files']} TFRecords "
            f"({tr['bytes'] / MB:,.0f} MB)",
            "",
            "`TileDataset(urls, shuffle=True, seed=0, batch_size=64)` in a "
            "`DataLoader(batch_size=None, num_workers=2)`: the same realistic 256 px JPEG tiles "
            "as `bench_loaders.py`, decoded to uint8 batches; local files with a warm page cache. "
            "`records per request` counts every request of the epoch (indexes and metadata "
            "included). The `tf.data` peer runs only where TensorFlow has an `s3://` filesystem: "
            "TensorFlow moved it to the `tensorflow-io` package (not installed here), so without "
            "it the row says why and there is no number.",
            "",
            *training_table(tr),
            "",
            "Targets (issue 19):",
            "",
            *training_verdicts(tr),
            "",
            *training_notes(tr, split=split),
            "",
        ]
    load = results["load"]
    lines += [
        f"Machine: {os.cpu_count()} CPUs shared with other jobs (load average {load[0]:.1f} at "
        f"the start, {load[1]:.1f} at the end), {_versions()}. The whole run took "
        f"{results['wall_seconds'] / 60:.1f} min.",
        "",
        f"Command: `{_command(args)}`",
        SPLIT_END if split else END,
    ]
    return "\n".join(lines)


def print_report(results: Result) -> None:
    """The tables and verdicts on standard output."""
    if "extraction" in results:
        print("\n".join(["", *extraction_table(results["extraction"]), ""]))
        print("\n".join(extraction_verdicts(results["extraction"])))
        print("\n".join(extraction_notes(results["extraction"], split=_split_cores(results))))
    if "training" in results:
        print("\n".join(["", *training_table(results["training"]), ""]))
        print("\n".join(training_verdicts(results["training"])))
        print("\n".join(training_notes(results["training"], split=_split_cores(results))))
    print(f"\nwhole run {results['wall_seconds']:.0f} s")


def write_docs(results: Result) -> None:
    """Write the "Object storage" section of ``docs/benchmarks.md``."""
    if _split_cores(results):
        write_section(section(results), SPLIT_START, SPLIT_END)
    else:
        write_section(section(results), START, END)
