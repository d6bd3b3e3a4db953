"""Issue 30: what running the trainer inside its Apptainer image costs, against the same job on the nodes' own
Python (runtime none), measured alternately on the same cluster so that a slow minute hits both.

Two figures per runtime, over ``repeats`` runs of the intent classifier through the launchers:
- time from submission to every rank initialised, 2 nodes x 2 tasks: the job's start marker, which rank 0 writes
  once every rank is inside ``hvd.init()`` with its Gloo context connected (launchers.runtime.task), minus the
  time before sbatch; also with one container per node (a site's ``container_share_per_node = true``, apptainer
  --sharens), the ranks of a node sharing one mount of the image;
- the trainer's samples per second, 2 nodes x 1 task over ``epochs`` epochs, from its metrics file: samples over
  time of every epoch after the first (which reads the image's pages in). One task per node because the
  development cluster's two nodes share this machine's two cores: four ranks there time the scheduler, and an
  epoch of this small dataset (a fraction of a second) varied 5x between runs of the same runtime.
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
SHARED = "apptainer, a container per node"  # start-up only: what container_share_per_node = true saves


def _run(
    root: Path, name: str, runtime: str, image: Path, dataset: Path, epochs: int, tasks_per_node: int = 2
) -> tuple[float, list[float]]:
    """One classifier job: (seconds from before sbatch to every rank initialised, samples/s of each epoch)."""
    workdir = root / name
    spec = intent_classifier_spec(
        workdir, dataset_dir=dataset, partition="team-a", account="team-a", epochs=epochs, tasks_per_node=tasks_per_node
    )
    if runtime != "none":
        spec = in_image(spec, image, workdir, dataset)
    if runtime == SHARED:
        spec = spec.model_copy(update={"container": spec.container.model_copy(update={"share_per_node": True})})
    _wait_idle()
    before = time.time()
    job = submit(spec)
    started = _wait_marker(JobMarkers(spec.folder, job.job_id), timeout_s=300)
    state = job.wait(timeout_s=900)
    if state is not JobState.SUCCEEDED:
        raise RuntimeError(f"{name}: job {job.job_id} {state.value} (logs in {spec.folder})")
    seen = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return started - before, [float(e["samples_per_s"]) for e in seen]


def bench_container(root: Path, repeats: int = 3, epochs: int = 30, image: Path = IMAGE) -> dict[str, Any]:
    if not image.is_file():
        raise FileNotFoundError(f"no image at {image}: run 'make image'")
    dataset = root / "datasets" / "intents"
    ensure_dataset(dataset)
    init: dict[str, list[float]] = {r: [] for r in (*RUNTIMES, SHARED)}
    rate: dict[str, list[float]] = {r: [] for r in RUNTIMES}
    first: dict[str, list[float]] = {r: [] for r in RUNTIMES}
    for i in range(repeats):
        started, _ = _run(root, f"init-shared-{i}", SHARED, image, dataset, epochs=1)
        init[SHARED].append(started)
        for runtime in RUNTIMES if i % 2 == 0 else RUNTIMES[::-1]:  # alternate who goes first
            started, _ = _run(root, f"init-{runtime}-{i}", runtime, image, dataset, epochs=1)
            init[runtime].append(started)
            _, rates = _run(root, f"rate-{runtime}-{i}", runtime, image, dataset, epochs=epochs, tasks_per_node=1)
            first[runtime].append(rates[0])
            # Samples over time of the epochs after the first: the harmonic mean of the epochs' rates.
            rate[runtime].append(statistics.harmonic_mean(rates[1:]))
    median = {r: statistics.median(times) for r, times in init.items()}
    speed = {r: statistics.median(rate[r]) for r in RUNTIMES}
    warm_up = {r: statistics.median(first[r]) for r in RUNTIMES}
    return {
        "image": str(image),
        "repeats": repeats,
        "epochs": epochs,
        "time_to_ranks_initialised_s": median,
        "image_minus_none_s": median["apptainer"] - median["none"],
        "samples_per_s": speed,
        "image_over_none": speed["apptainer"] / speed["none"],
        "first_epoch_samples_per_s": warm_up,
        "all_init_s": init,
        "all_samples_per_s": rate,
    }


def container_lines(result: dict[str, Any]) -> str:
    init, speed, warm = (
        result["time_to_ranks_initialised_s"],
        result["samples_per_s"],
        result["first_epoch_samples_per_s"],
    )
    return "\n".join(
        [
            f"container (median of {result['repeats']} runs each, alternating image and none):",
            f"  submission -> every rank initialised (2 nodes x 2 tasks): image {init['apptainer']:.2f} s, "
            f"none {init['none']:.2f} s (image {result['image_minus_none_s']:+.2f} s; target at most +1 s); "
            f"with a container per node (container_share_per_node = true) {init[SHARED]:.2f} s",
            f"  trainer samples/s (2 nodes x 1 task, epochs 2-{result['epochs']}): image {speed['apptainer']:.0f}, "
            f"none {speed['none']:.0f} (image {100 * result['image_over_none']:.1f} % of none; target at least 98 %)",
            f"  first epoch samples/s (pages of the image read in): image {warm['apptainer']:.0f}, "
            f"none {warm['none']:.0f}",
            "  every run, start-up s: "
            + "; ".join(f"{r} " + " ".join(f"{t:.2f}" for t in ts) for r, ts in result["all_init_s"].items()),
            "  every run, samples/s: "
            + "; ".join(f"{r} " + " ".join(f"{v:.0f}" for v in vs) for r, vs in result["all_samples_per_s"].items()),
        ]
    )


if __name__ == "__main__":  # `python -m bench.container`: this case alone
    import argparse
    import tempfile

    from devcluster import use_local_cluster

    parser = argparse.ArgumentParser(prog="python -m bench.container", description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--image", type=Path, default=IMAGE, help="the image to run [default: %(default)s]")
    args = parser.parse_args()
    use_local_cluster()
    folder = Path(tempfile.mkdtemp(prefix="hpcgw-bench-container-"))
    folder.chmod(0o755)
    print(container_lines(bench_container(folder, args.repeats, args.epochs, args.image)))
