import pytest

from launchers.slurm.hostlist import expand_hostlist, expand_tasks_per_node


@pytest.mark.parametrize(
    ("expr", "hosts"),
    [
        ("n1", ["n1"]),
        ("n[1-2]", ["n1", "n2"]),
        ("n[1-3],login", ["n1", "n2", "n3", "login"]),
        ("gpu[01,07-08]", ["gpu01", "gpu07", "gpu08"]),
        ("a[8-10]-ib", ["a8-ib", "a9-ib", "a10-ib"]),
        ("rack1-n[1-2],rack2-n[3]", ["rack1-n1", "rack1-n2", "rack2-n3"]),
    ],
)
def test_expand_hostlist(expr: str, hosts: list[str]) -> None:
    assert expand_hostlist(expr) == hosts


@pytest.mark.parametrize("bad", ["n[1-", "n[3-1]", "n[a-b]"])
def test_malformed_hostlist(bad: str) -> None:
    with pytest.raises(ValueError, match=r"host list|range"):
        expand_hostlist(bad)


def test_expand_tasks_per_node() -> None:
    assert expand_tasks_per_node("2(x2)") == [2, 2]
    assert expand_tasks_per_node("4,2(x3),1") == [4, 2, 2, 2, 1]
    with pytest.raises(ValueError, match="tasks-per-node"):
        expand_tasks_per_node("2(y3)")
