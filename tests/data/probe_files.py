"""A trainer of team B that tries to read and write what is not its own (paths in PROBE_TARGETS, a JSON object
{what: path}); it writes what happened to MODEL_OUTPUT_DIR/probe.json. A write opens the file without writing a
byte, so a successful probe changes nothing."""

from __future__ import annotations

import grp
import json
import os
import pwd
from pathlib import Path


def attempt(kind: str, path: Path) -> str:
    try:
        if kind == "read":
            if path.is_dir():
                os.listdir(path)
            else:
                path.read_bytes()
        elif path.is_dir():
            (path / ".probe").touch()
            (path / ".probe").unlink()
        else:
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
    except PermissionError:
        return "permission denied"
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    return "allowed"


def main() -> None:
    targets = json.loads(os.environ["PROBE_TARGETS"])
    results = {
        f"{kind} {what}": attempt(kind, Path(path)) for what, path in targets.items() for kind in ("read", "write")
    }
    me = pwd.getpwuid(os.getuid()).pw_name
    groups = sorted(grp.getgrgid(g).gr_name for g in os.getgroups())
    out = {"whoami": me, "groups": groups, "results": results}
    Path(os.environ["MODEL_OUTPUT_DIR"], "probe.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
