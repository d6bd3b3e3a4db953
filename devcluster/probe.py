"""Small checks the cluster's set-up and status share: a command's output, or whether it succeeded."""

from __future__ import annotations

from devcluster.spec import ClusterSpec
from launchers.slurm.shell import run


def munge_ok(spec: ClusterSpec) -> bool:
    socket_arg = f"--socket={spec.paths.munge_socket}"
    cred = run(["munge", "-n", socket_arg], check=False, timeout_s=10)
    if cred.returncode != 0:
        return False
    return run(["unmunge", socket_arg], input_text=cred.stdout, check=False, timeout_s=10).returncode == 0


def ok(argv: list[str], env: dict[str, str] | None = None) -> bool:
    return run(argv, env=env, check=False, timeout_s=20).returncode == 0


def out(argv: list[str], env: dict[str, str] | None = None) -> str:
    proc = run(argv, env=env, check=False, timeout_s=20)
    return proc.stdout if proc.returncode == 0 else ""
