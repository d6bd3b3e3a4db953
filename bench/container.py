"""Issue 30: what running the trainer inside its Apptainer image costs, against the same job on the nodes' own
Python (runtime none), measured alternately on the same cluster so that a slow minute hits both.

Two figures per runtime, over ``repeats`` runs of the 2-node x 2-task intent classifier through the launchers:
- time from submission to every rank initialised: the job's start marker, which rank 0 writes once every rank is
  inside ``hvd.init()`` with its Gloo context connected (launchers.runtime.task), minus the time before sbatch;
- the trainer's samples per second, from its metrics file, the first epoch left out (it warms up the allocator).
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Any

from bench.support import _wait_idle, _wait_marker
from examples.intent_classifier import IMAGE, ensure_dataset, in_image, intent_classifier_spec
from launchers import JobState, submit
from launchers.runtime.markers import JobMarkers

RUNTIMES = ("apptainer", "none")


def bench_container(root: Path, repeats: int = 3, epochs: int = 4, image: Path = IMAGE) -> dict[str, Any]:
    if not image.is_file():
        raise FileNotFoundError(f"no image at {image}: run 'make image'")
    dataset = root / "datasets" / "intents"
    ensure_dataset(dataset)
    init: dict[str, list[float]] = {r: [] for r in RUNTIMES}
    rate: dict[str, list[float]] = {r: [] for r in RUNTIMES}
    for i in range(repeats):
        for runtime in RUNTIMES if i % 2 == 0 else RUNTIMES[::-1]:  # alternate who goes first
            workdir = root / f"{runtime}-{i}"
            spec = intent_classifier_spec(
                workdir, dataset_dir=dataset, partition="team-a", account="team-a", epochs=epochs
            )
            if runtime == "apptainer":
                spec = in_image(spec, image, workdir, dataset)
            _wait_idle()
            before = time.time()
            job = submit(spec)
            started = _wait_marker(JobMarkers(spec.folder, job.job_id), timeout_s=300)
            state = job.wait(timeout_s=600)
            if state is not JobState.SUCCEEDED:
                raise RuntimeError(f"{runtime} run {i}: job {job.job_id} {state.value} (logs in {spec.folder})")
            init[runtime].append(started - before)
            epochs_seen = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
            rate[runtime].append(statistics.mean(e["samples_per_s"] for e in epochs_seen[1:]))
    median = {r: statistics.median(init[r]) for r in RUNTIMES}
    speed = {r: statistics.median(rate[r]) for r in RUNTIMES}
    return {
        "image": str(image),
        "repeats": repeats,
        "time_to_ranks_initialised_s": median,
        "image_minus_none_s": median["apptainer"] - median["none"],
        "samples_per_s": speed,
        "image_over_none": speed["apptainer"] / speed["none"],
        "all_init_s": init,
        "all_samples_per_s": rate,
    }


def container_lines(result: dict[str, Any]) -> str:
    init, speed = result["time_to_ranks_initialised_s"], result["samples_per_s"]
    return "\n".join(
        [
            f"container (2 nodes x 2 tasks, median of {result['repeats']} runs each, alternating):",
            f"  submission -> every rank initialised: image {init['apptainer']:.2f} s, none {init['none']:.2f} s "
            f"(image {result['image_minus_none_s']:+.2f} s; target at most +1 s)",
            f"  trainer samples/s: image {speed['apptainer']:.0f}, none {speed['none']:.0f} "
            f"(image {100 * result['image_over_none']:.1f} % of none; target at least 98 %)",
        ]
    )


if __name__ == "__main__":  # `python -m bench.container`: this case alone
    import argparse
    import tempfile

    from devcluster import use_local_cluster

    parser = argparse.ArgumentParser(prog="python -m bench.container", description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    use_local_cluster()
    folder = Path(tempfile.mkdtemp(prefix="hpcgw-bench-container-"))
    folder.chmod(0o755)
    print(container_lines(bench_container(folder, args.repeats, args.epochs)))
