"""`hpcgw cluster up|status|down|env`: the local development Slurm cluster."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from devcluster import ClusterError, ClusterSpec, cluster_down, cluster_status, cluster_up
from devcluster.cluster import ClusterStatus
from devcluster.spec import SpecError, default_state_dir

app = typer.Typer(
    help="Run a real Slurm cluster on this machine (munge, MariaDB, slurmdbd, slurmctld, slurmd).",
    no_args_is_help=True,
)
console = Console()
err = Console(stderr=True)

StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="Where the cluster keeps its files [env: HPCGW_CLUSTER_DIR; default .hpcgw/cluster]",
    ),
]


@app.command()
def up(
    nodes: Annotated[
        int | None, typer.Option("--nodes", "-N", help="Number of emulated nodes (>= 2) [default: 2]")
    ] = None,
    partitions: Annotated[
        str | None,
        typer.Option(
            "--partitions", "-p", help="Partitions over all nodes, comma-separated [default: team-a,team-b,team-c]"
        ),
    ] = None,
    cpus_per_node: Annotated[int | None, typer.Option(help="CPUs each node offers [default: 2]")] = None,
    max_array_size: Annotated[int | None, typer.Option(help="Slurm's MaxArraySize [default: 1001]")] = None,
    port_base: Annotated[
        int | None,
        typer.Option(help="Ports used: base+6 MariaDB, +17 slurmctld, +19 slurmdbd, +100.. slurmd [default: 16800]"),
    ] = None,
    state_dir: StateDir = None,
    no_install: Annotated[bool, typer.Option("--no-install", help="Never run apt-get, even as root")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the status as JSON")] = False,
) -> None:
    """Start the cluster (installing Debian packages as root when missing); a healthy cluster is left alone."""
    try:
        spec = _spec(
            state_dir,
            nodes=nodes,
            partitions=partitions,
            cpus_per_node=cpus_per_node,
            max_array_size=max_array_size,
            port_base=port_base,
        )
        status = cluster_up(spec, allow_install=not no_install)
    except (ClusterError, SpecError) as exc:
        err.print(f"hpcgw cluster up: error: {exc}", style="red", highlight=False, markup=False)
        raise typer.Exit(1) from None
    _show(status, json_out)
    if not json_out:
        console.print(f"\nexport SLURM_CONF={status.spec.paths.slurm_conf}" if status.spec else "")


@app.command()
def status(
    state_dir: StateDir = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the status as JSON")] = False,
) -> None:
    """Report each daemon, node and partition, and whether accounting answers. Exit 1 when unhealthy."""
    result = cluster_status(state_dir.resolve() if state_dir else None)
    _show(result, json_out)
    raise typer.Exit(0 if result.healthy else 1)


@app.command()
def down(state_dir: StateDir = None) -> None:
    """Stop exactly the daemons `up` started (found through its pid files). Safe when nothing runs."""
    stopped = cluster_down(state_dir.resolve() if state_dir else None)
    console.print(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@app.command()
def env(state_dir: StateDir = None) -> None:
    """Print `export SLURM_CONF=…` for this cluster: `eval "$(hpcgw cluster env)"` and sinfo/sbatch use it."""
    spec = ClusterSpec.load(state_dir.resolve() if state_dir else None)
    if spec is None:
        err.print("hpcgw cluster env: no cluster has been brought up here; run `hpcgw cluster up`", style="red")
        raise typer.Exit(1)
    for key, value in spec.slurm_env.items():
        typer.echo(f"export {key}={value}")


@app.command()
def users(
    config: Annotated[Path, typer.Option("--config", "-c", help="The gateway configuration whose users to create")],
) -> None:
    """Create the Unix groups (one per team) and users (one per token) a gateway configuration names, the
    gateway's own user `hpcgw`, and the sudoers rule that lets it submit as them; hand the gateway its files."""
    from devcluster import users as unix
    from gateway.config import ConfigError, load_config

    try:
        settings = load_config(config)
    except ConfigError as exc:
        err.print(f"hpcgw cluster users: error: {exc}", style="red", highlight=False, markup=False)
        raise typer.Exit(2) from None
    url = settings.database_url
    database = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") and ":memory:" not in url else None
    try:
        done = unix.ensure(unix.plan_from_config(settings))
        done += unix.give_to_gateway(config.resolve(), database, settings.job_root)
    except (ClusterError, OSError) as exc:
        err.print(f"hpcgw cluster users: error: {exc}", style="red", highlight=False, markup=False)
        raise typer.Exit(1) from None
    for line in done:
        console.print(f"created: {line}" if " owns " not in line else line, highlight=False, markup=False)
    console.print("users and groups: in place", highlight=False)


def _spec(state_dir: Path | None, **overrides: object) -> ClusterSpec:
    """Options given on the command line win; the rest come from the last `up` in this directory, then defaults."""
    root = state_dir.resolve() if state_dir else default_state_dir()
    base = ClusterSpec.load(root)
    values: dict[str, object] = {}
    if base is not None:
        values = json.loads(base.to_json())
    values["state_dir"] = root
    for key, value in overrides.items():
        if value is None:
            continue
        values[key] = tuple(p.strip() for p in str(value).split(",") if p.strip()) if key == "partitions" else value
    return ClusterSpec(**values)  # type: ignore[arg-type]


def _show(status: ClusterStatus, json_out: bool) -> None:
    if json_out:
        typer.echo(json.dumps(status.as_dict(), indent=2))
        return
    daemons = Table("daemon", "state", "pid", title=f"cluster in {status.state_dir}", title_justify="left")
    for d in status.daemons:
        daemons.add_row(d.name, "[green]running[/green]" if d.running else "[red]stopped[/red]", str(d.pid or "-"))
    console.print(daemons)
    nodes = Table("node", "state", "partitions")
    for n in status.nodes:
        colour = "green" if n.state == "idle" else "yellow"
        nodes.add_row(n.name, f"[{colour}]{n.state}[/{colour}]", ",".join(n.partitions))
    console.print(nodes)
    parts = Table("partition", "avail", "nodes")
    for p in status.partitions:
        parts.add_row(p.name, p.available, p.nodes)
    console.print(parts)
    colour = "green" if status.accounting_ok else "red"
    console.print(
        f"accounting: [{colour}]{'ok' if status.accounting_ok else 'NOT OK'}[/{colour}] ({status.accounting_detail})"
    )
    if status.apptainer is not None:
        colour = "green" if status.apptainer.ok else "yellow"
        console.print(f"apptainer: [{colour}]{status.apptainer.describe()}[/{colour}]", highlight=False)
    console.print(f"healthy: {'yes' if status.healthy else 'no'}")
