"""The Gloo rendezvous that rank 0 hosts for the job, and how the other ranks find it."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from launchers.runtime.topology import BootstrapError, HorovodTopology

DEFAULT_RENDEZVOUS_TIMEOUT_S = 60.0
EXIT_RENDEZVOUS = 75  # EX_TEMPFAIL: the rendezvous could not be reached


def resolve_node_address(node: str, env: Mapping[str, str]) -> str:
    """The address of ``node``: DNS first; else Slurm's NodeAddr (emulated nodes have no DNS name)."""
    if env.get("HPCGW_RENDEZVOUS_ADDR"):
        return env["HPCGW_RENDEZVOUS_ADDR"]
    try:
        return socket.gethostbyname(node)
    except OSError:
        pass
    from launchers.slurm.commands import node_address

    address = node_address(node)
    if address is None:
        raise BootstrapError(f"cannot resolve the address of node {node}")
    return address


def network_iface(env: Mapping[str, str], rendezvous_addr: str) -> str | None:
    """The interface Gloo and NCCL use: configured, or loopback when the whole job is on loopback."""
    if env.get("HPCGW_NETWORK_IFACE"):
        return env["HPCGW_NETWORK_IFACE"]
    try:
        if ipaddress.ip_address(rendezvous_addr).is_loopback:
            return "lo"
    except ValueError:
        pass
    return None


def start_rendezvous_server(
    topology: HorovodTopology, port: int, on_all_ranks: Callable[[], None] | None = None
) -> tuple[Any, threading.Thread]:
    """Host Horovod's Gloo rendezvous. ``on_all_ranks`` runs once every rank finished the global rendezvous,
    i.e. every rank is inside ``hvd.init()`` with its Gloo context connected."""
    from horovod.runner.common.util.hosts import get_host_assignments, parse_hosts
    from horovod.runner.http.http_server import RendezvousHandler, RendezvousHTTPServer

    lock = threading.Lock()
    finished: set[str] = set()

    class Handler(RendezvousHandler):  # type: ignore[misc]
        def do_DELETE(self) -> None:  # noqa: N802  (http.server naming) a rank is done with a scope
            parts = self.path.split("/")
            super().do_DELETE()
            if on_all_ranks is None or len(parts) < 3 or parts[1] != "global":
                return
            with lock:
                finished.add(parts[2])
                complete = len(finished) == topology.size
            if complete:
                on_all_ranks()

    server = RendezvousHTTPServer(("0.0.0.0", port), Handler, 0)  # noqa: S104  (ranks on other nodes)
    hosts = ",".join(f"{host}:{slots}" for host, slots in topology.hosts)
    # init() with the full plan: keys are cleared only after every rank finished, not when rank 0 did.
    server.init(get_host_assignments(parse_hosts(hosts), topology.size))
    thread = threading.Thread(target=server.serve_forever, name="rendezvous", daemon=True)
    thread.start()
    return server, thread


def wait_for_port(addr: str, port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((addr, port), timeout=2):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"rendezvous server {addr}:{port} (hosted by rank 0) not reachable after {timeout_s:.0f} s: {exc}"
                ) from None
            time.sleep(0.2)
