from pathlib import Path

import pytest

from launchers.runtime.markers import JobMarkers
from launchers.runtime.rendezvous import network_iface
from launchers.runtime.topology import BootstrapError, HorovodTopology


def slurm_env(
    procid: int, nodeid: int, localid: int, nodes: str = "n[1-2]", tasks: str = "2(x2)", ntasks: int = 4
) -> dict[str, str]:
    return {
        "SLURM_STEP_NODELIST": nodes,
        "SLURM_STEP_TASKS_PER_NODE": tasks,
        "SLURM_PROCID": str(procid),
        "SLURM_STEP_NUM_TASKS": str(ntasks),
        "SLURM_NODEID": str(nodeid),
        "SLURM_LOCALID": str(localid),
        "SLURMD_NODENAME": f"n{nodeid + 1}",
        "SLURM_JOB_ID": "41",
        "SLURM_STEP_ID": "0",
    }


@pytest.mark.parametrize(
    ("procid", "nodeid", "localid", "cross_rank"),
    [(0, 0, 0, 0), (1, 0, 1, 0), (2, 1, 0, 1), (3, 1, 1, 1)],
)
def test_two_nodes_two_tasks(procid: int, nodeid: int, localid: int, cross_rank: int) -> None:
    topo = HorovodTopology.from_slurm(slurm_env(procid, nodeid, localid))
    env = topo.horovod_env("127.0.0.1", 20000, "lo", 30)
    assert env["HOROVOD_RANK"] == str(procid)
    assert env["HOROVOD_SIZE"] == "4"
    assert env["HOROVOD_LOCAL_RANK"] == str(localid) and env["HOROVOD_LOCAL_SIZE"] == "2"
    assert env["HOROVOD_CROSS_RANK"] == str(cross_rank) and env["HOROVOD_CROSS_SIZE"] == "2"
    assert env["HOROVOD_HOSTNAME"] == f"n{nodeid + 1}"
    assert env["HOROVOD_CONTROLLER"] == "gloo" and env["HOROVOD_GLOO_IFACE"] == "lo"
    assert topo.hosts == (("n1", 2), ("n2", 2))


def test_uneven_nodes_cross_size_counts_nodes_with_that_local_rank() -> None:
    # 3 tasks on n1, 1 on n2: local rank 2 exists only on n1.
    topo = HorovodTopology.from_slurm(slurm_env(2, 0, 2, tasks="3,1"))
    assert (topo.local_size, topo.cross_rank, topo.cross_size) == (3, 0, 1)
    topo = HorovodTopology.from_slurm(slurm_env(3, 1, 0, tasks="3,1"))
    assert (topo.local_size, topo.cross_rank, topo.cross_size) == (1, 1, 2)


def test_outside_slurm_is_a_clear_error() -> None:
    with pytest.raises(BootstrapError, match="not set: run this under srun"):
        HorovodTopology.from_slurm({})


def test_inconsistent_layout() -> None:
    with pytest.raises(BootstrapError, match="inconsistent"):
        HorovodTopology.from_slurm(slurm_env(0, 0, 0, tasks="2(x3)"))


def test_rank_0_publishes_the_rendezvous_for_the_others(tmp_path: Path) -> None:
    markers = JobMarkers(tmp_path, "41_3")
    with pytest.raises(TimeoutError, match="published no rendezvous address"):
        markers.wait_rendezvous(0, timeout_s=0.2)
    markers.write_rendezvous(0, "10.0.0.7", 41234)
    assert markers.wait_rendezvous(0, timeout_s=1) == ("10.0.0.7", 41234)
    with pytest.raises(TimeoutError):  # a requeued run never reads the previous run's address
        markers.wait_rendezvous(1, timeout_s=0.2)


def test_network_iface() -> None:
    assert network_iface({}, "127.0.0.1") == "lo"
    assert network_iface({}, "10.1.2.3") is None
    assert network_iface({"HPCGW_NETWORK_IFACE": "ib0"}, "127.0.0.1") == "ib0"
