"""A job whose folder someone made first fails alone, with the folder in its reason; its batch goes on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.worker.conftest import Gateway
from tests.worker.fakeslurm import FakeSlurm


def test_a_squatted_folder_fails_its_job_alone_and_the_rest_of_the_batch_is_sent(
    make_gateway: Callable[..., Gateway], fake: FakeSlurm, tmp_path: Path
) -> None:
    gw = make_gateway({"team_a": {"max_running_jobs": 10}})
    ids = [gw.submit(parameters={"LR": str(i)}) for i in range(3)]
    squatted = Path(gw.job(ids[1]).folder)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    squatted.parent.mkdir(parents=True, exist_ok=True)
    squatted.symlink_to(elsewhere)
    gw.cycle()
    failed = gw.job(ids[1])
    assert failed.state == "failed" and failed.slurm_job_id is None
    assert str(squatted) in (failed.reason or "") and "sbatch" not in (failed.reason or "")
    assert fake.count("sbatch") == 1
    assert [gw.job(i).slurm_job_id for i in (ids[0], ids[2])] == ["100_0", "100_1"]
    assert list(elsewhere.iterdir()) == []
