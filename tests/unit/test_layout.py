"""The layout's promises, checked on the source: small modules, no import cycle between the project's modules
(imports inside functions count too), and a client that a login node can import without the launchers'
submission machinery."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.store.models import Job, JobFields

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("gateway", "launchers", "devcluster", "examples", "bench")
MAX_LINES = 400


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def imports_of(path: Path, name: str, known: set[str]) -> set[str]:
    """The project modules ``name`` imports anywhere in its body (a package's own submodules count)."""
    found: set[str] = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                found.add(target)
    return found


def test_no_module_is_over_400_lines() -> None:
    long = {
        name: n for name, path in project_modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_no_import_cycle_between_modules() -> None:
    modules = project_modules()
    graph = {name: imports_of(path, name, set(modules)) for name, path in modules.items()}
    # a package importing its own submodules is not a cycle; drop parent -> child edges
    graph = {n: {t for t in ts if not t.startswith(n + ".")} for n, ts in graph.items()}
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*trail[trail.index(nxt) :], nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


@pytest.mark.parametrize("module", ["gateway.client", "gateway.cli.main"])
def test_the_client_does_not_import_the_launchers_machinery(module: str) -> None:
    code = f"import {module}, sys, json; print(json.dumps([len(sys.modules), 'submitit' in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    count, submitit = json.loads(out.stdout)
    assert not submitit
    if module == "gateway.client":
        assert count < 400, count  # 442 before the layout change, submitit included


def test_the_jobs_field_groups_name_its_columns() -> None:
    """JobFields names the Job's columns once for retries, shapes and polls: a renamed column breaks it here."""
    groups = (JobFields.PLACEMENT, JobFields.SCRIPT_INPUTS, JobFields.PER_JOB_INPUTS, JobFields.TRACKED)
    assert {name for group in groups for name in group} <= set(Job.model_fields)
