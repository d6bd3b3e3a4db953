from pathlib import Path
from typing import Any

import pytest

from devcluster.packages import PackagesMissingError, ensure_packages
from devcluster.spec import ClusterSpec, SpecError
from launchers.templates import render


def test_defaults(tmp_path: Path) -> None:
    spec = ClusterSpec(state_dir=tmp_path)
    assert spec.nodes == 2 and spec.partitions == ("team-a", "team-b", "team-c")
    assert spec.node_names == ["n1", "n2"]
    assert spec.slurm_env == {"SLURM_CONF": str(tmp_path / "etc" / "slurm.conf")}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nodes": 1}, "nodes must be between 2 and 64"),
        ({"partitions": ("team-a", "Team B")}, "invalid partition name 'Team B'"),
        ({"partitions": ("a", "a")}, "repeat"),
        ({"partitions": ()}, "at least one partition"),
        ({"cluster_name": "My-Cluster"}, "invalid cluster name"),
        ({"port_base": 80}, "port_base"),
    ],
)
def test_bad_specs_are_refused(tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(SpecError, match=message):
        ClusterSpec(state_dir=tmp_path, **kwargs)


def test_state_dir_too_long_for_sockets(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="too long for Unix sockets"):
        ClusterSpec(state_dir=tmp_path / ("x" * 100))


def test_round_trip(tmp_path: Path) -> None:
    spec = ClusterSpec(state_dir=tmp_path, nodes=3, partitions=("gpu",), max_array_size=5)
    assert ClusterSpec.from_json(spec.to_json()) == spec


def test_rendered_slurm_conf(tmp_path: Path) -> None:
    spec = ClusterSpec(state_dir=tmp_path, nodes=3, partitions=("team-a", "team-b"), max_array_size=5)
    conf = render("cluster/slurm.conf.j2", **spec.template_context("secret"))
    lines = conf.splitlines()
    assert "ClusterName=hpcgw" in lines
    assert "MaxArraySize=5" in lines
    assert f"SlurmctldPort={spec.ports.slurmctld}" in lines
    assert f"AccountingStoragePass={tmp_path}/munge/munge.socket" in lines
    nodes = [line for line in lines if line.startswith("NodeName=")]
    assert [n.split()[0] for n in nodes] == ["NodeName=n1", "NodeName=n2", "NodeName=n3"]
    assert f"Port={spec.ports.slurmd_first + 2}" in nodes[2]
    parts = [line for line in lines if line.startswith("PartitionName=")]
    assert parts[0].startswith("PartitionName=team-a Nodes=n1,n2,n3 Default=YES")
    assert parts[1].startswith("PartitionName=team-b Nodes=n1,n2,n3 Default=NO")
    dbd = render("cluster/slurmdbd.conf.j2", **spec.template_context("secret"))
    assert "StoragePass=secret" in dbd.splitlines()


def test_missing_packages_without_root_name_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("devcluster.packages.shutil.which", lambda name: None)
    monkeypatch.setattr("devcluster.packages.os.path.exists", lambda path: False)
    monkeypatch.setattr("devcluster.packages.os.geteuid", lambda: 1000)
    with pytest.raises(PackagesMissingError) as info:
        ensure_packages()
    message = str(info.value)
    assert "slurm-wlm, slurmdbd, munge, mariadb-server" in message
    assert "sudo apt-get install -y slurm-wlm slurmdbd munge mariadb-server" in message


def test_up_without_root_refuses_before_touching_anything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from devcluster import cluster as cluster_module

    monkeypatch.setattr("devcluster.cluster.os.geteuid", lambda: 1000)
    monkeypatch.setattr("devcluster.packages.os.geteuid", lambda: 1000)
    with pytest.raises(cluster_module.ClusterError, match="needs root"):
        cluster_module.cluster_up(ClusterSpec(state_dir=tmp_path / "c"))
    assert not (tmp_path / "c").exists()
