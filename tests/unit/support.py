"""What the unit tests share: a real image file at a fixed path with a space and quotes (the golden files pin
its path)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

ODD_DIR = Path('/tmp/hpcgw golden/it\'s "here"')


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    """A real file at a fixed path with a space and quotes, so the golden files do not depend on tmp names."""
    ODD_DIR.mkdir(parents=True, exist_ok=True)
    path = ODD_DIR / "intent classifier.sif"
    path.write_bytes(b"not really an image")
    yield str(path)
