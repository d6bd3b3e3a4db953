"""Golden files: `HPCGW_UPDATE_GOLDEN=1 pytest …` rewrites them; otherwise a mismatch fails with a diff."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

GOLDEN_DIR = Path(__file__).parent.parent / "golden"


def assert_golden(name: str, actual: str) -> None:
    path = GOLDEN_DIR / name
    if os.environ.get("HPCGW_UPDATE_GOLDEN"):
        path.write_text(actual)
    expected = path.read_text()
    if actual != expected:
        diff = "\n".join(
            difflib.unified_diff(expected.splitlines(), actual.splitlines(), "golden", "actual", lineterm="")
        )
        raise AssertionError(f"{name} differs from its golden file:\n{diff}")
