"""Run Python in a folder it cannot write to, even as root (tests of read-only folders)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import missing


def _unprivileged() -> list[str]:
    """A command prefix under which file permissions apply (root: drop the overrides)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        missing("running as root without setpriv: cannot make a folder unwritable")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner,-linux_immutable"]


def run_read_only(folder: Path, code: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -c code`` while ``folder`` is read-only to it; the folder is restored."""
    prefix = _unprivileged()
    folder.chmod(0o555)
    try:
        return subprocess.run(
            [*prefix, sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        folder.chmod(0o755)
