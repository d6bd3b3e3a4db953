"""Verified reruns: run a finished job again from its recorded inputs and compare the models' SHA-256.

A rerun that differs is only useful with the reason, so the answer lists every recorded input that differs
between the two runs: image digest or code, algorithm version, dataset version, parameters, seed, world size, and the
torch and Horovod versions the job itself reported (launchers.runtime.provenance). Identical inputs with a
different model mean the trainer is not deterministic (docs/reproducibility.md).
"""

from __future__ import annotations

from typing import Any

from gateway.schemas import Difference, Verification, VerificationStatus
from gateway.store.models import Job
from launchers.states import JobState


def recorded_inputs(job: Job) -> dict[str, Any]:
    """What a run depends on, as recorded: the request's inputs, and what the job itself reported."""
    provenance = job.provenance or {}
    versions = provenance.get("versions") or {}
    parameters = {k: v for k, v in job.parameters.items() if k != "SEED"}
    return {
        "image": job.image,
        "image_digest": job.image_digest,
        "command": list(job.command),
        "code_sha256": provenance.get("code_sha256"),
        "algorithm_version": f"{job.algorithm} {job.algorithm_version}",
        "dataset": f"{job.dataset_id}@{job.train_data_version_hash}",
        "parameters": parameters,
        "seed": job.parameters.get("SEED", "0"),
        "world_size": provenance.get("world_size", job.nodes * job.tasks_per_node),
        "nodes": job.nodes,
        "tasks_per_node": job.tasks_per_node,
        "gpus_per_node": job.gpus_per_node,
        "torch": versions.get("torch"),
        "horovod": versions.get("horovod"),
        "python": versions.get("python"),
    }


def differences(original: Job, rerun: Job) -> list[Difference]:
    before, after = recorded_inputs(original), recorded_inputs(rerun)
    return [Difference(input=k, original=before[k], rerun=after[k]) for k in before if before[k] != after[k]]


def verify(original: Job, rerun: Job) -> Verification:
    diffs = differences(original, rerun)
    ours = (original.provenance or {}).get("model_sha256")
    theirs = (rerun.provenance or {}).get("model_sha256")

    def answer(status: VerificationStatus, detail: str) -> Verification:
        return Verification(
            original=original.id,
            rerun=rerun.id,
            status=status,
            detail=detail,
            original_model_sha256=ours,
            rerun_model_sha256=theirs,
            differences=diffs,
        )

    if not rerun.state.is_terminal:
        return answer("pending", f"the rerun is {rerun.state}")
    if original.state != JobState.SUCCEEDED or rerun.state != JobState.SUCCEEDED:
        return answer("failed", f"both runs must succeed: the original {original.state}, the rerun {rerun.state}")
    if ours is None or theirs is None:
        missing = "the original" if ours is None else "the rerun"
        return answer("unverifiable", f"{missing} recorded no model digest (a run from before provenance, or no model)")
    if ours == theirs:
        return answer("identical", "byte-identical model")
    if diffs:
        named = ", ".join(f"{d.input} {d.original} -> {d.rerun}" for d in diffs)
        return answer("different", f"the models differ; so do these inputs: {named}{_image_note(original, rerun)}")
    files = _differing_files(original, rerun)
    return answer(
        "different",
        "the models differ with every recorded input the same: the trainer is not deterministic"
        + (f" (files: {', '.join(files)})" if files else ""),
    )


def _image_note(original: Job, rerun: Job) -> str:
    """A rerun runs its algorithm version's digest as checked against the file at its submission: another digest
    than the original's means the version was re-registered since (POST …/versions/{version}/digest)."""
    if original.image_digest == rerun.image_digest:
        return ""
    return (
        f". The image changed: the original ran {original.image} at {original.image_digest}, the rerun ran "
        f"{rerun.image_digest} (algorithm {rerun.algorithm} version {rerun.algorithm_version} was re-registered)"
    )


def _differing_files(original: Job, rerun: Job) -> list[str]:
    a = (original.provenance or {}).get("model_files") or {}
    b = (rerun.provenance or {}).get("model_files") or {}
    return sorted(name for name in {*a, *b} if a.get(name) != b.get(name))
