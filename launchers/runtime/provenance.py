"""What a finished run records so that it can be run again and checked: written by rank 0, in the job itself.

The versions of torch and Horovod must be those the trainer ran with, which only the job's own environment (the
container's, or the virtual environment's) knows; so do the world size and the model's bytes. The gateway
reads this file back when the job succeeds (gateway/worker/health.py) and compares two of them for
``hpcgw rerun --verify``.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from launchers.runtime.markers import write_atomic

MAX_FILES = 256  # a model directory is a few files; every job's record (and listing) carries their digests
PACKAGES = ("torch", "horovod", "numpy")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_digest(root: Path, pattern: str = "*") -> tuple[str | None, dict[str, str]]:
    """SHA-256 of each regular file under ``root`` (relative names), and one digest over all of them."""
    files: dict[str, str] = {}
    if root.is_dir():
        for path in sorted(root.rglob(pattern)):
            if len(files) >= MAX_FILES:
                break
            if path.is_file() and not path.is_symlink() and not path.name.startswith("."):
                files[str(path.relative_to(root))] = file_sha256(path)
    if not files:
        return None, files
    overall = hashlib.sha256("".join(f"{name}\0{sha}\n" for name, sha in files.items()).encode())
    return overall.hexdigest(), files


def code_digest(command: Sequence[str]) -> str | None:
    """The trainer's code where no image digest says it: the Python files beside the command's script."""
    for arg in command[1:]:
        path = Path(arg)
        if path.suffix == ".py" and path.is_file():
            return tree_digest(path.resolve().parent, "*.py")[0]
    return None


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def record(
    env: Mapping[str, str], command: Sequence[str], world_size: int, hosts: Sequence[str], *, model: bool = True
) -> dict[str, Any]:
    """``model``: hash the model directory (at the end of a successful run; before it, there is no model)."""
    model_dir = Path(env.get("MODEL_OUTPUT_DIR", ""))
    model_sha, files = tree_digest(model_dir) if model and env.get("MODEL_OUTPUT_DIR") else (None, {})
    return {
        "world_size": world_size,
        "hosts": list(hosts),
        "seed": env.get("SEED"),
        "versions": versions(),
        "code_sha256": code_digest(command),
        "model_sha256": model_sha,
        "model_files": files,
        "restart": int(env.get("HPCGW_RESTART_COUNT", "0") or 0),
        # Inside Apptainer: the image it set APPTAINER_CONTAINER to, and the digest the gateway checked at
        # dispatch (HPCGW_IMAGE_DIGEST); the image file itself is not bound into the container to be hashed.
        "container": env.get("APPTAINER_CONTAINER"),
        "image_digest": env.get("HPCGW_IMAGE_DIGEST"),
    }


def write(path: Path, data: Mapping[str, Any]) -> None:
    write_atomic(path, json.dumps(data, sort_keys=True))
