"""Slideflow's own tile extraction of one slide, run by Slideflow's interpreter.

``bench_extract.py --slideflow-python PATH`` runs this file with that
interpreter (Slideflow and tilestream rarely share an environment: Slideflow
pins ``numpy<2`` and an older protobuf). It imports nothing of tilestream and
prints one JSON line: tiles written, the seconds of the work alone (opening the
slide and ``WSI.extract_tiles``), the CPU seconds of the process and its
children, and the seconds since the interpreter started (imports included).

Usage (by the benchmark)::

    SF_SLIDE_BACKEND=cucim SF_BACKEND=torch PYTHON _slideflow_child.py SLIDE TILE_PX TILE_UM OUT THREADS
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _records(folder: str) -> int:
    """Records in the TFRecords under ``folder`` (length-prefixed frames, no TensorFlow)."""
    count = 0
    for root, _, files in os.walk(folder):
        for name in files:
            if not name.endswith(".tfrecords"):
                continue
            with open(os.path.join(root, name), "rb") as f:
                while True:
                    head = f.read(12)
                    if len(head) < 12:
                        break
                    length = int.from_bytes(head[:8], "little")
                    f.seek(length + 4, os.SEEK_CUR)
                    count += 1
    return count


def main() -> None:
    slide, tile_px, tile_um, out, threads = sys.argv[1:6]
    started = time.perf_counter()
    import slideflow as sf

    imported = time.perf_counter()
    cpu0 = _cpu()
    t0 = time.perf_counter()
    wsi = sf.WSI(slide, tile_px=int(tile_px), tile_um=int(float(tile_um)), verbose=False)
    wsi.extract_tiles(tfrecord_dir=out, img_format="jpg", report=False, num_threads=int(threads))
    work = time.perf_counter() - t0
    cpu = _cpu() - cpu0
    print(
        json.dumps(
            {
                "tiles": _records(out),
                "work_seconds": work,
                "cpu_seconds": cpu,
                "import_seconds": imported - started,
                "slideflow": sf.__version__,
                "backend": sf.slide_backend(),
                "extract_px": int(wsi.full_extract_px),
                "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


if __name__ == "__main__":
    main()
