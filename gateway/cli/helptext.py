"""The examples that end each command's ``--help``: what a Slurm user types first, ready to copy."""

from __future__ import annotations

EXAMPLES: dict[str, tuple[str, ...]] = {
    "submit": (
        "hpcgw submit --algorithm intent-classifier --dataset intents --data-version <hash> -N 2 "
        "--ntasks-per-node 2 --param LR=0.3 --wait",
        "hpcgw submit --direct -p team-a -N 2 --framework ddp --wait -- python train_ddp.py",
    ),
    "render": (
        "hpcgw render --algorithm intent-classifier --dataset intents --data-version <hash> -N 2",
        "hpcgw render --direct -p team-a -N 2 --framework ddp -- python train_ddp.py",
    ),
    "status": ("hpcgw status 9214ab07", "hpcgw status 9214ab07 --json | jq .provenance"),
    "jobs": ("hpcgw jobs --state running", "hpcgw jobs -o '%.16i %.13T %.10A %R' --wide"),
    "logs": ("hpcgw logs -f --rank 0 9214ab07",),
    "cancel": ("hpcgw cancel 9214ab07 77c1e2d0",),
    "metrics": ("hpcgw metrics 9214ab07", "hpcgw metrics 9214ab07 --json"),
    "algorithms": ("hpcgw algorithms",),
    "reregister": ("hpcgw reregister intent-classifier 1.0   # after rebuilding its image file",),
    "rerun": ("hpcgw rerun --verify 9214ab07", "hpcgw rerun --verify 9214ab07 --nodes 1"),
    "watch": ("hpcgw watch", "hpcgw watch -i 5 --iterations 12 | tee queue.log"),
    "sweep": (
        "hpcgw sweep --algorithm intent-classifier --dataset intents --data-version <hash> --grid LR=0.1,0.3 "
        "--max-parallel 2 --wait",
    ),
    "serve": ("hpcgw serve --config /etc/hpcgw/gateway.toml --processes 2",),
    "worker": ("hpcgw worker --config /etc/hpcgw/gateway.toml",),
    "accounts": ("hpcgw accounts check --config /etc/hpcgw/gateway.toml",),
}


def epilog(command: str) -> str | None:
    found = EXAMPLES.get(command)
    return "Examples:\n\n" + "\n\n".join(f"  {line}" for line in found) if found else None
