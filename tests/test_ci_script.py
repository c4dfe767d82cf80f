"""The CI script runs the tests the way its header says: with ``CI=true``."""

from __future__ import annotations

from pathlib import Path

CI_SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "run"


def test_ci_script_sets_ci_true_before_the_tests() -> None:
    """Under ``CI=true`` a missing framework, data set or server fails instead of skipping."""
    lines = [line.strip() for line in CI_SCRIPT.read_text().splitlines()]
    exports = [i for i, line in enumerate(lines) if line == "export CI=true"]
    tests = [i for i, line in enumerate(lines) if "pytest" in line and not line.startswith("#")]
    assert exports, "the CI script does not export CI=true"
    assert tests, "the CI script runs no pytest"
    assert exports[0] < tests[0], "CI=true is set after the tests start"
