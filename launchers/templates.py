"""Rendering of the Jinja templates in ``slurm_templates/``.

Templates are what Slurm reads, so a missing variable must fail loudly (``StrictUndefined``) rather than
render a blank directive that Slurm would silently ignore.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

import jinja2

_REPO_TEMPLATES = Path(__file__).resolve().parent.parent / "slurm_templates"


def template_root() -> Path:
    """``$HPCGW_TEMPLATES`` if set (a site's own copy), else the repository's ``slurm_templates/``."""
    root = Path(os.environ.get("HPCGW_TEMPLATES", _REPO_TEMPLATES))
    if not root.is_dir():
        raise FileNotFoundError(f"template directory {root} does not exist (set HPCGW_TEMPLATES)")
    return root


def _environment(root: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701  (these are config files and scripts, not HTML)
    )
    # Every value that reaches a shell line goes through `| q`.
    env.filters["q"] = lambda value: shlex.quote(str(value))
    return env


def render(name: str, **context: Any) -> str:
    """Render ``slurm_templates/<name>`` with ``context``; a missing variable raises ``UndefinedError``."""
    return _environment(template_root()).get_template(name).render(**context)
