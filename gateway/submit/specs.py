"""A stored job as a launcher spec: what the worker submits and ``/v1/jobs/render`` shows. A trainer's job gets
its dataset and protocol paths; a function's job gets its payload (gateway.submit.functions) and no dataset."""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

from gateway.config import GatewayConfig
from gateway.run_health import HealthPolicy
from gateway.store.models import Job
from gateway.submit.comments import slurm_comment
from gateway.submit.job_requests import FUNCTION_ALGORITHM, stored_resources
from launchers.spec import ContainerSpec, Framework, JobSpec


def job_spec(config: GatewayConfig, job: Job) -> JobSpec:
    """The launcher spec of a stored job. The gateway id rides along in the Slurm comment, for reconciliation."""
    if job.algorithm == FUNCTION_ALGORITHM:
        payload = payload_path(job)  # its function instead of a trainer, no dataset, the site's function image
        return _spec(config, job, job_env(config, job), payload, function=payload)
    return _spec(config, job, job_env(config, job), dataset_path(config, job))


def job_env(config: GatewayConfig, job: Job) -> dict[str, str]:
    """The job's environment: what it brings to an array it shares with others (with its command)."""
    if job.algorithm == FUNCTION_ALGORITHM:
        env = {"JOB_ID": job.id}
    else:  # joined as text: a Path per join was a tenth of a coalesced dispatch's time
        env = {
            **job.parameters,
            "TRAINING_DATA_PATH": os.path.join(config.dataset_root, job.dataset_id, job.train_data_version_hash),
            "MODEL_OUTPUT_DIR": os.path.join(job.folder, "model"),
            "METRICS_FILE": os.path.join(job.folder, "metrics.jsonl"),
            "SEED": job.parameters.get("SEED", "0"),
            "JOB_ID": job.id,
        }
    if job.image_digest and config.container_runtime == "apptainer":
        env["HPCGW_IMAGE_DIGEST"] = job.image_digest  # the provenance record names the bytes it ran in
    if job.health:
        env["HPCGW_HEARTBEAT_S"] = f"{HealthPolicy.model_validate(job.health).heartbeat_s:g}"
    return env


def dataset_path(config: GatewayConfig, job: Job) -> Path:
    return config.dataset_root / job.dataset_id / job.train_data_version_hash


def _spec(config: GatewayConfig, job: Job, env: dict[str, str], bind: Path, function: Path | None = None) -> JobSpec:
    """``bind``: what the container must see read-only (the dataset, or a function's payload), with runtime
    apptainer. The job's folder (MODEL_OUTPUT_DIR, METRICS_FILE) is seen through the job root: jobs of one shape
    share one array and so one apptainer command line, and a bind of each job's (or team's) own folder would split
    them (gateway.worker.shapes); the folders' owners, modes and access lists hold inside the container as
    outside (gateway.site.folders: another team's folder cannot be entered). The launcher adds submitit's folder;
    nothing else of the host is bound."""
    container = ContainerSpec()
    if config.container_runtime == "apptainer":
        root = str(config.job_root)
        container = ContainerSpec.model_validate(
            {
                "runtime": "apptainer",
                "image": job.image,
                "binds": [
                    {"source": root, "target": root},
                    {"source": str(bind), "target": str(bind), "read_only": True},
                ],
                "env_passthrough": tuple(config.container_env_passthrough),
                "share_per_node": config.container_share_per_node,
            }
        )
    return JobSpec(
        name=f"hpcgw-{job.id}",
        partition=job.partition,
        account=job.account,
        qos=job.qos,
        **stored_resources(job).model_dump(),
        requeue=job.requeue,
        framework=cast(Framework, job.framework),
        container=container,
        command=tuple(job.command),
        env=env,
        function=function,
        folder=Path(job.submit_folder),
        comment=slurm_comment(job.id),
        run_as=config.unix_user_of(job.user),
    )


def payload_path(job: Job) -> Path:
    return Path(job.folder) / "function.pkl"
