"""`make demo`: the intent classifier as a 2-node x 2-task Horovod job through `launchers.submission`.

It prints the job's states as they change, each epoch's metrics as rank 0 writes them, and the final state
from sacct, and exits non-zero unless the job succeeded with one metrics line per epoch.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from devcluster import use_local_cluster
from examples.intent_classifier import IMAGE, ensure_dataset, in_image, intent_classifier_spec
from launchers.states import JobState
from launchers.submission import submit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.launcher_demo", description=__doc__)
    parser.add_argument("--partition", default="team-a")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=Path(".hpcgw/demo"))
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the job")
    parser.add_argument(
        "--image",
        type=Path,
        default=IMAGE,
        help="the Apptainer image the trainer runs in (make image); 'none' runs it on the nodes' own Python",
    )
    args = parser.parse_args(argv)
    use_local_cluster()

    workdir = args.workdir.resolve() / time.strftime("run-%Y%m%d-%H%M%S")
    data_hash = ensure_dataset(args.workdir.resolve() / "datasets" / "intents")
    dataset_dir = args.workdir.resolve() / "datasets" / "intents"
    spec = intent_classifier_spec(
        workdir, dataset_dir=dataset_dir, partition=args.partition, account=args.partition, epochs=args.epochs
    )
    if str(args.image) != "none":
        if not args.image.is_file():
            parser.error(f"no image at {args.image}: run 'make image' (or pass --image none)")
        spec = in_image(spec, args.image.resolve(), workdir, dataset_dir)
    started = time.monotonic()
    job = submit(spec)
    print(
        f"submitted job {job.job_id}: intent classifier, 2 nodes x 2 tasks on {args.partition} "
        f"(dataset {data_hash[:12]}, {'image ' + str(spec.container.image) if spec.container.image else 'no image'})",
        flush=True,
    )
    metrics = workdir / "metrics.jsonl"
    last_state, printed = None, 0
    while True:
        state = job.state
        if state is not last_state:
            print(f"[{time.monotonic() - started:6.1f}s] {state.value}", flush=True)
            last_state = state
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        for line in lines[printed:]:
            m = json.loads(line)
            print(
                f"  epoch {m['epoch']}: loss {m['loss']:.4f}  held-out accuracy {m['accuracy']:.3f}  "
                f"{m['samples_per_s']:.0f} samples/s",
                flush=True,
            )
        printed = len(lines)
        if state.is_terminal or time.monotonic() - started > args.timeout:
            break
        time.sleep(1)
    final_state = job.wait(timeout_s=60)
    row = job.info()
    if row is not None:
        print(
            f"sacct: job {row.job_id} {row.slurm_state} exit {row.exit_code}:{row.exit_signal} "
            f"partition {row.partition} nodes {row.nodes} ({row.node_list}) elapsed {row.elapsed}"
        )
    ok = final_state is JobState.SUCCEEDED and printed == args.epochs and (workdir / "model" / "model.pt").exists()
    print(f"demo {'succeeded' if ok else 'FAILED'}: model in {workdir / 'model'}, logs in {spec.folder}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
