"""The example trainer (containers/intent-classifier) as a ready-made job spec, for the demo, tests and benches."""

from __future__ import annotations

import sys
from pathlib import Path

from launchers.slurm.shell import run
from launchers.spec import Bind, ContainerSpec, Framework, JobSpec

REPO = Path(__file__).resolve().parent.parent
TRAINER_DIR = REPO / "containers" / "intent-classifier"
# scripts/build-image.sh (make image): the trainer at /opt/intent-classifier, with the project's launchers
IMAGE = REPO / ".hpcgw" / "images" / "intent-classifier.sif"
IMAGE_TRAINER_DIR = "/opt/intent-classifier"


def ensure_dataset(directory: Path) -> str:
    """Generate the intent dataset into ``directory`` unless it is there; returns its version hash."""
    out = run([sys.executable, "-m", "intent_classifier.dataset", str(directory)], cwd=TRAINER_DIR, timeout_s=120)
    return out.stdout.strip()


def intent_classifier_spec(
    workdir: Path,
    *,
    dataset_dir: Path,
    partition: str,
    account: str | None = None,
    nodes: int = 2,
    tasks_per_node: int = 2,
    seed: int = 7,
    epochs: int = 5,
    time_limit_min: int = 15,
    extra_env: dict[str, str] | None = None,
    framework: Framework = "horovod",
) -> JobSpec:
    """A runtime-'none' spec of the classifier, writing its model and metrics under ``workdir``; ``framework``
    picks its Horovod form (train.py) or its DDP form (train_ddp.py)."""
    env = {
        "TRAINING_DATA_PATH": str(dataset_dir),
        "MODEL_OUTPUT_DIR": str(workdir / "model"),
        "METRICS_FILE": str(workdir / "metrics.jsonl"),
        "SEED": str(seed),
        "EPOCHS": str(epochs),
        "LR": "0.3",
        "BATCH_SIZE": "32",
        "FC_SIZE": "64",
        **(extra_env or {}),
    }
    return JobSpec(
        name="intent-classifier",
        partition=partition,
        account=account,
        nodes=nodes,
        tasks_per_node=tasks_per_node,
        time_limit_min=time_limit_min,
        command=(sys.executable, str(TRAINER_DIR / ("train_ddp.py" if framework == "ddp" else "train.py"))),
        framework=framework,
        env=env,
        folder=workdir / "job",
    )


def in_image(spec: JobSpec, image: Path, *folders: Path) -> JobSpec:
    """``spec`` (a runtime-'none' spec of the classifier) run inside ``image``: the image's own copy of its trainer,
    and ``folders`` (its work folder, its dataset) bound at their own paths; nothing else of the host."""
    trainer = Path(spec.command[-1])
    if trainer.parent != TRAINER_DIR:
        raise ValueError(f"not the classifier's trainer: {spec.command}")
    binds = tuple(Bind(source=f, target=f, read_only=False) for f in folders)
    container = ContainerSpec(runtime="apptainer", image=str(image), binds=binds)
    command = ("python", f"{IMAGE_TRAINER_DIR}/{trainer.name}")
    return spec.model_copy(update={"command": command, "container": container})
