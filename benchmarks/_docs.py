"""Writing a benchmark's section into ``docs/benchmarks.md`` (shared by the benchmark scripts)."""

from __future__ import annotations

import os
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"

INTRO = (
    "# Benchmarks\n\n"
    "Speed targets of tilestream are measured by the scripts in `benchmarks/`, never by timed "
    "unit tests. Each benchmark runs its peers side by side in the same run and reports ratios. "
    "One section per benchmark; each gives the exact command that produced it.\n"
)


def write_section(section: str, start: str, end: str, *, docs: Path = DOCS) -> None:
    """Replace the part of ``docs`` between the ``start`` and ``end`` markers with ``section``.

    ``section`` includes both markers. Without them in the file it is appended; the file is
    created with a short introduction if missing, and replaced atomically.
    """
    docs.parent.mkdir(parents=True, exist_ok=True)
    current = docs.read_text(encoding="utf-8") if docs.exists() else INTRO
    if start in current and end in current:
        before, rest = current.split(start, 1)
        after = rest.split(end, 1)[1].lstrip("\n")
        updated = before + section.rstrip("\n") + "\n" + ("\n" + after if after else "")
    else:
        updated = current.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    tmp = docs.with_name(f".{docs.name}.tmp")
    tmp.write_text(updated, encoding="utf-8")
    os.replace(tmp, docs)
