"""Benchmark: tiles of a slide on a DICOMweb server (Orthanc on loopback), tilestream against a per-frame client and local files.

The slide: an Aperio-style SVS written by ``make_synthetic_slide`` (240 px JPEG
tiles stored as RGB, quality 70, levels 1/4/16, half the area tissue from the
shared ``CMU-1-Small-Region.svs``), converted with ``OrthancWSIDicomizer`` by
``tilestream.testing.orthanc.dicomize`` (the JPEG tiles copied into one
instance per level), both cached under ``benchmarks/_work/dicomweb/``
(git-ignored), and stored in a fresh Orthanc (``OrthancServer``: loopback, the
DICOMweb plugin, 16 HTTP threads) for the run.

The pass: every whole 256 px tile of level 0 in row order (the extraction
grid; 256 px tiles do not line up with the 240 px frames, so most output tiles
touch 4 frames). Readers, each in its own fresh process:

* ``tilestream``: ``tilestream.slide.open_slide("dicomweb+http://...")`` and
  ``Slide.read_region(..., as_array=True)``;
* ``wado-per-frame``: the straightforward client: dicomweb-client's
  ``retrieve_instance_frames`` with one frame per call, each frame decoded
  (libjpeg-turbo through simplejpeg, as tilestream decodes) and kept in a
  decoded-frame cache of two rows of frames, so that each frame is fetched once
  in a row-order pass (without the cache it would fetch every frame a tile
  touches, the "frames per tile" column);
* ``wsidicom-web``: wsidicom's own DICOMweb source, ``WsiDicom.read_region``
  (for reference: a DICOMweb reader with its own batching);
* ``local-tilestream``: the same DICOM files read locally,
  ``tilestream.slide.open_slide(<level-0 .dcm>)`` (the OpenSlide backend);
* ``local-wsidicom``: the same files through ``WsiDicom.open(folder)``.

Rates are wall-clock output tiles per second of the read loop (the server runs
on the same machine, so client CPU time alone would hide the server's work;
the client's CPU seconds are shown too); opening is timed apart. Readers
alternate over ``--rounds`` rounds (the order rotating) and the best round is
reported. A separate untimed pass runs each remote reader through a small
counting HTTP proxy in front of Orthanc: requests, bytes received (headers and
bodies) per output tile, and every tile's SHA-1 compared with the local read's.

Targets: tilestream at least 5x ``wado-per-frame`` and at least 0.5x the local
read (the faster local reader).

Run::

    python benchmarks/bench_dicomweb.py                 # print the table
    python benchmarks/bench_dicomweb.py --write-docs    # and update docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import http.server
import json
import os
import platform
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / "_work" / "dicomweb"
START = "<!-- bench_dicomweb:start -->"
END = "<!-- bench_dicomweb:end -->"
TILE = 256
REMOTE = ("tilestream", "wado-per-frame", "wsidicom-web")
LOCAL = ("local-tilestream", "local-wsidicom")
READERS = REMOTE + LOCAL
#: Readers compared with each other: every tile's SHA-1 must equal local-tilestream's.
REFERENCE = "local-tilestream"

#: The stored JPEG baseline frames as they are (Orthanc answers 400 to the client's default).
JPEG = (("image/jpeg", "1.2.840.10008.1.2.4.50"),)

TileSource = Callable[[], Iterator[np.ndarray]]


def testdata_root() -> Path:
    env = os.environ.get("TILESTREAM_TESTDATA")
    root = Path(env) if env else REPO.parent / "shared" / "testdata"
    if not (root / "slides" / "CMU-1-Small-Region.svs").is_file():
        sys.exit(f"real test data not found under {root} (set TILESTREAM_TESTDATA)")
    return root


def ensure_series(size: int) -> Path:
    """The benchmark slide dicomized: a folder of DICOM files, one per level, made once."""
    from tilestream.testing.orthanc import dicomize_readable
    from tilestream.testing.synthetic import make_synthetic_slide

    svs = WORK / f"aperio-{size}-q70-seed0.svs"
    folder = WORK / f"aperio-{size}-q70-seed0-dicom"
    if not svs.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        print(f"generating {svs.name} ...", file=sys.stderr, flush=True)
        make_synthetic_slide(
            svs,
            width=size,
            height=size,
            tile_size=240,
            jpeg_quality=70,
            tissue_fraction=0.5,
            seed=0,
            source_tiles=testdata_root() / "slides" / "CMU-1-Small-Region.svs",
        )
    if not folder.is_dir() or not any(folder.glob("*.dcm")):
        print(f"dicomizing {svs.name} ...", file=sys.stderr, flush=True)
        tmp = folder.with_name(folder.name + ".tmp")
        dicomize_readable(svs, tmp)
        tmp.rename(folder)
    return folder


# --------------------------------------------------------------------------- readers


def _grid(width: int, height: int) -> list[tuple[int, int]]:
    return [
        (x, y) for y in range(0, height - TILE + 1, TILE) for x in range(0, width - TILE + 1, TILE)
    ]


def _tilestream(target: str) -> tuple[TileSource, dict[str, Any]]:
    from tilestream.slide import open_slide

    slide = open_slide(target)
    grid = _grid(*slide.dimensions)

    def tiles() -> Iterator[np.ndarray]:
        for x, y in grid:
            yield slide.read_region((x, y), 0, (TILE, TILE), as_array=True)[..., :3]

    return tiles, {"tiles": len(grid), "backend": slide.backend}


def _wsidicom(spec: dict[str, Any], remote: bool) -> tuple[TileSource, dict[str, Any]]:
    import wsidicom

    if remote:
        client = wsidicom.WsiDicomWebClient.create_client(spec["dicomweb"])
        wsi = wsidicom.WsiDicom.open_web(client, spec["study"], spec["series"])
    else:
        wsi = wsidicom.WsiDicom.open(spec["folder"])
    grid = _grid(wsi.size.width, wsi.size.height)

    def tiles() -> Iterator[np.ndarray]:
        for x, y in grid:
            yield np.asarray(wsi.read_region((x, y), 0, (TILE, TILE)).convert("RGB"))

    return tiles, {"tiles": len(grid)}


class PerFrameClient:
    """The straightforward DICOMweb reader: one WADO-RS request per frame, frames decoded.

    Finds the level-0 instance from the series' metadata (the widest VOLUME
    instance), assumes frames in row-major order (as the dicomizer and
    TILED_FULL write them) and keeps ``cache_frames`` decoded frames.
    """

    def __init__(self, dicomweb: str, study: str, series: str, cache_frames: int) -> None:
        import simplejpeg
        from dicomweb_client.api import DICOMwebClient

        self._decode = simplejpeg.decode_jpeg
        self.client = DICOMwebClient(url=dicomweb)
        self.study, self.series = study, series
        meta = self.client.retrieve_series_metadata(study, series)
        level0 = max(
            (m for m in meta if "VOLUME" in m.get("00080008", {}).get("Value", [])),
            key=lambda m: m["00480006"]["Value"][0],
        )
        self.instance = level0["00080018"]["Value"][0]
        self.width = int(level0["00480006"]["Value"][0])
        self.height = int(level0["00480007"]["Value"][0])
        self.frame_w = int(level0["00280011"]["Value"][0])
        self.frame_h = int(level0["00280010"]["Value"][0])
        self.across = -(-self.width // self.frame_w)
        self.cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self.cache_frames = cache_frames
        self.fetched = 0

    def frame(self, col: int, row: int) -> np.ndarray:
        number = row * self.across + col + 1
        if number in self.cache:
            self.cache.move_to_end(number)
            return self.cache[number]
        (data,) = self.client.retrieve_instance_frames(
            self.study, self.series, self.instance, frame_numbers=[number], media_types=JPEG
        )
        self.fetched += 1
        pixels = self._decode(data, colorspace="RGB")
        self.cache[number] = pixels
        if len(self.cache) > self.cache_frames:
            self.cache.popitem(last=False)
        return pixels

    def read(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        out = np.empty((h, w, 3), np.uint8)
        fw, fh = self.frame_w, self.frame_h
        for row in range(y // fh, (y + h - 1) // fh + 1):
            for col in range(x // fw, (x + w - 1) // fw + 1):
                frame = self.frame(col, row)
                x0, y0 = max(x, col * fw), max(y, row * fh)
                x1, y1 = min(x + w, (col + 1) * fw), min(y + h, (row + 1) * fh)
                out[y0 - y : y1 - y, x0 - x : x1 - x] = frame[
                    y0 - row * fh : y1 - row * fh, x0 - col * fw : x1 - col * fw
                ]
        return out

    def frames_touched(self, grid: list[tuple[int, int]]) -> int:
        fw, fh = self.frame_w, self.frame_h
        return sum(
            ((x + TILE - 1) // fw - x // fw + 1) * ((y + TILE - 1) // fh - y // fh + 1)
            for x, y in grid
        )


def _per_frame(spec: dict[str, Any]) -> tuple[TileSource, dict[str, Any]]:
    client = PerFrameClient(spec["dicomweb"], spec["study"], spec["series"], 0)
    client.cache_frames = 2 * client.across + 2  # two rows of frames: each fetched once
    grid = _grid(client.width, client.height)

    def tiles() -> Iterator[np.ndarray]:
        for x, y in grid:
            yield client.read(x, y, TILE, TILE)

    return tiles, {"tiles": len(grid), "frames_touched": client.frames_touched(grid)}


def open_reader(reader: str, spec: dict[str, Any]) -> tuple[TileSource, dict[str, Any]]:
    if reader == "tilestream":
        return _tilestream(spec["url"])
    if reader == "local-tilestream":
        return _tilestream(spec["level0_file"])
    if reader == "wado-per-frame":
        return _per_frame(spec)
    if reader in ("wsidicom-web", "local-wsidicom"):
        return _wsidicom(spec, remote=reader == "wsidicom-web")
    raise ValueError(reader)


def worker(reader: str, spec: dict[str, Any], digests: bool) -> dict[str, Any]:
    """Open one reader and read the pass, timed (or with every tile's SHA-1, untimed)."""
    start, cpu_start = time.perf_counter(), time.process_time()
    source, info = open_reader(reader, spec)
    open_seconds = time.perf_counter() - start
    start, cpu_start = time.perf_counter(), time.process_time()
    hashes = []
    for tile in source():
        if digests:
            hashes.append(hashlib.sha1(np.ascontiguousarray(tile).tobytes()).hexdigest())
    return {
        "reader": reader,
        **info,
        "open_seconds": open_seconds,
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu_start,
        "digests": hashes,
    }


def run_worker(reader: str, spec: dict[str, Any], digests: bool = False) -> dict[str, Any]:
    """``worker`` in a fresh process; an error becomes ``{"error": ...}``."""
    command = [sys.executable, __file__, "--worker", reader, json.dumps(spec)]
    if digests:
        command.append("--digests")
    out = subprocess.run(command, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines()
        return {"reader": reader, "error": lines[-1] if lines else f"exit {out.returncode}"}
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


# --------------------------------------------------------------------------- counting proxy


class CountingProxy(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """A loopback HTTP proxy in front of one server, counting requests and bytes received."""

    daemon_threads = True

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.requests = 0
        self.bytes_in = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def reset(self) -> None:
        with self.lock:
            self.requests = self.bytes_in = 0


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: CountingProxy

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        upstream = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=120)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
        upstream.request("GET", self.path, headers=headers)
        response = upstream.getresponse()
        body = response.read()
        upstream.close()
        self.send_response(response.status)
        head = 0
        for key, value in response.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(key, value)
                head += len(key) + len(value) + 4
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        with self.server.lock:
            self.server.requests += 1
            self.server.bytes_in += len(body) + head


# --------------------------------------------------------------------------- driver


def versions() -> str:
    import dicomweb_client
    import openslide
    import wsidicom

    return (
        f"Python {platform.python_version()}, OpenSlide {openslide.__library_version__}, "
        f"wsidicom {wsidicom.__version__}, dicomweb-client {dicomweb_client.__version__}"
    )


def orthanc_version(server: Any) -> str:
    system = server.get("/system")
    try:
        plugin = server.get("/plugins/dicom-web").get("Version", "?")
    except Exception:  # an Orthanc without the plugin's description
        plugin = "?"
    return f"Orthanc {system['Version']} (DICOMweb plugin {plugin})"


def measure(spec: dict[str, Any], rounds: int, readers: tuple[str, ...]) -> dict[str, Any]:
    """Alternating timed rounds; the best round per reader."""
    best: dict[str, dict[str, Any]] = {}
    for r in range(rounds):
        order = readers[r % len(readers) :] + readers[: r % len(readers)]
        for reader in order:
            result = run_worker(reader, spec)
            if "error" in result:
                best.setdefault(reader, result)
                continue
            print(
                f"round {r + 1} {reader}: {result['tiles'] / result['seconds']:.0f} tiles/s",
                file=sys.stderr,
                flush=True,
            )
            if (
                "error" in best.get(reader, {"error": 1})
                or result["seconds"] < best[reader]["seconds"]
            ):
                best[reader] = result
    return best


def count(spec: dict[str, Any], proxy: CountingProxy, readers: tuple[str, ...]) -> dict[str, Any]:
    """Each reader once, untimed, with tile digests; the remote ones through the proxy."""
    counted: dict[str, Any] = {}
    for reader in readers:
        through = dict(spec)
        if reader in REMOTE:
            through["dicomweb"] = proxy.url + "/dicom-web"
            through["url"] = spec["url"].replace(spec["dicomweb"], through["dicomweb"])
        proxy.reset()
        result = run_worker(reader, through, digests=True)
        result["requests"], result["bytes_in"] = proxy.requests, proxy.bytes_in
        counted[reader] = result
    return counted


def table(best: dict[str, Any], counted: dict[str, Any]) -> list[str]:
    rows = [
        "| reader | output tiles | tiles/s (wall) | client CPU s | open (s) | requests | "
        "requests per tile | bytes received per tile | pixels |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    reference = counted.get(REFERENCE, {}).get("digests")
    for reader in READERS:
        result = best.get(reader)
        if result is None:
            continue
        if "error" in result:
            rows.append(f"| {reader} | - | not run: {result['error'][:120]} | | | | | | |")
            continue
        tiles = result["tiles"]
        check = counted.get(reader, {})
        remote = reader in REMOTE
        pixels = "reference" if reader == REFERENCE else _pixels(check.get("digests"), reference)
        rows.append(
            f"| {reader} | {tiles:,} | {tiles / result['seconds']:,.0f} | "
            f"{result['cpu_seconds']:.2f} | {result['open_seconds']:.2f} | "
            + (
                f"{check.get('requests', 0):,} | {check.get('requests', 0) / tiles:.2f} | "
                f"{check.get('bytes_in', 0) / tiles / 1024:,.1f} KiB | "
                if remote
                else "local | - | - | "
            )
            + f"{pixels} |"
        )
    return rows


def _pixels(digests: list[str] | None, reference: list[str] | None) -> str:
    if not digests or not reference:
        return "not compared"
    same = sum(a == b for a, b in zip(digests, reference, strict=False))
    return (
        "identical, every tile"
        if same == len(reference) == len(digests)
        else (f"**{len(reference) - same:,} tiles differ**")
    )


def verdicts(best: dict[str, Any], counted: dict[str, Any]) -> str:
    def rate(reader: str) -> float | None:
        result = best.get(reader, {})
        return None if "error" in result or not result else result["tiles"] / result["seconds"]

    def verdict(value: float, target: float) -> str:
        return "met" if value >= target else "**not met**"

    ts, frame = rate("tilestream"), rate("wado-per-frame")
    local = max((r for r in (rate(x) for x in LOCAL) if r is not None), default=None)
    if ts is None:
        return (
            "Reading the table. Targets: tilestream at least 5x the per-frame client and at "
            "least 0.5x the local read. tilestream's DICOMweb backend did not run in this "
            "build, so the targets are not measured."
        )
    parts = [
        "Reading the table. Targets: tilestream at least 5x the per-frame client and at least 0.5x the local read."
    ]
    if frame is not None:
        parts.append(
            f"tilestream is {ts / frame:.1f}x `wado-per-frame` ({verdict(ts / frame, 5)})."
        )
    if local is not None:
        parts.append(
            f"tilestream is {ts / local:.2f}x the faster local read ({verdict(ts / local, 0.5)})."
        )
    frames = best.get("wado-per-frame", {}).get("frames_touched")
    if frames:
        tiles = best["wado-per-frame"]["tiles"]
        parts.append(
            f"The output tiles touch {frames / tiles:.2f} frames each on average: a per-frame "
            f"client without a frame cache would send {frames:,} requests for the pass."
        )
    ts_count, frame_count = counted.get("tilestream", {}), counted.get("wado-per-frame", {})
    if ts_count.get("requests") and frame_count.get("requests"):
        parts.append(
            f"Requests (opening's metadata included): tilestream {ts_count['requests']:,}, the "
            f"per-frame client {frame_count['requests']:,}; bytes received "
            f"{ts_count['bytes_in'] / frame_count['bytes_in']:.2f}x the per-frame client's "
            "(both move each stored frame once; the rest is metadata, which each reads its own "
            "way). The gap to the per-frame client is round trips: "
            "tilestream asks for the rest of the stored rows it reads (up to 256 frames ahead) "
            "in multi-frame requests, several in flight, while the per-frame client waits for one frame at a time."
        )
    local_ts, local_wsi = rate("local-tilestream"), rate("local-wsidicom")
    if local_ts is not None and local_wsi is not None:
        faster = "faster" if local_ts > local_wsi else "slower"
        parts.append(
            "`local-tilestream` reads the files through OpenSlide's DICOM reader (tilestream's "
            f"`openslide` backend), {faster} here than wsidicom's reader of the same files."
        )
    return " ".join(parts)


def section(best: dict[str, Any], counted: dict[str, Any], meta: dict[str, Any]) -> str:
    return "\n".join(
        [
            START,
            "## Slides over DICOMweb: tilestream vs a per-frame WADO-RS client and local files "
            "(`benchmarks/bench_dicomweb.py`)",
            "",
            f"`benchmarks/bench_dicomweb.py`: a {meta['size']:,} x {meta['size']:,} Aperio-style "
            "SVS (240 px JPEG tiles, quality 70, levels 1/4/16, half real tissue) dicomized "
            "with `OrthancWSIDicomizer` (tiles copied, one instance per level) and stored in "
            f"{meta['orthanc']} on loopback; every whole 256 px tile of level 0 read in row "
            "order. One process per reader; best of "
            f"{meta['rounds']} alternating rounds, wall-clock (Orthanc shares the machine's "
            "CPUs with the client). Requests and bytes come from an untimed pass through a "
            "counting proxy in front of Orthanc; every tile's SHA-1 was compared with the "
            "local read's.",
            "",
            *table(best, counted),
            "",
            verdicts(best, counted),
            "",
            f"Machine: {meta['machine']}, {meta['versions']}.",
            "",
            f"Command: `{meta['command']}`",
            END,
        ]
    )


def _public_args(argv: list[str]) -> list[str]:
    """The command line without ``--json PATH`` (a local path, not for the docs)."""
    out, skip = [], False
    for arg in argv:
        if skip or arg.startswith("--json="):
            skip = False
            continue
        if arg == "--json":
            skip = True
            continue
        out.append(arg)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8_000, help="slide side in pixels")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the best is reported")
    parser.add_argument("--readers", default=",".join(READERS))
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument("--worker", nargs=2, metavar=("READER", "SPEC"))
    parser.add_argument("--digests", action="store_true")
    args = parser.parse_args()
    if args.worker:
        reader, spec = args.worker
        print(json.dumps(worker(reader, json.loads(spec), args.digests)))
        return

    from tilestream.testing.orthanc import OrthancServer

    readers = tuple(r for r in args.readers.split(",") if r)
    folder = ensure_series(args.size)
    files = sorted(folder.glob("*.dcm"))
    with tempfile.TemporaryDirectory() as tmp, OrthancServer(Path(tmp)) as server:
        (ref,) = server.upload(files)
        spec = {
            "dicomweb": server.dicomweb_url,
            "url": ref.url(server.dicomweb_url),
            "study": ref.study_uid,
            "series": ref.series_uid,
            "folder": str(folder),
            "level0_file": str(files[0]),
        }
        proxy = CountingProxy(server.port)
        try:
            best = measure(spec, args.rounds, readers)
            counted = count(spec, proxy, readers)
        finally:
            proxy.shutdown()
        meta = {
            "size": args.size,
            "rounds": args.rounds,
            "orthanc": orthanc_version(server),
            "versions": versions(),
            "machine": f"{os.cpu_count()} shared CPUs, load average {os.getloadavg()[0]:.1f} at the end",
            "command": " ".join(
                ["python benchmarks/bench_dicomweb.py", *_public_args(sys.argv[1:])]
            ),
        }
    text = section(best, counted, meta)
    print(text)
    for result in list(best.values()) + list(counted.values()):
        result.pop("digests", None)
    if args.json:
        args.json.write_text(json.dumps({"best": best, "counted": counted, "meta": meta}, indent=1))
    if args.write_docs:
        sys.path.insert(0, str(HERE))
        from _docs import write_section

        write_section(text, START, END)


if __name__ == "__main__":
    main()
