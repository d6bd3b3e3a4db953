"""What a job asks Slurm for, defined once: the launchers' ``JobSpec``, the gateway's request schema and the
CLI's sbatch-style flags all take these fields with these limits, and the gateway's table stores them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from launchers.errors import SpecError
from launchers.slurm.sinfo import PartitionSize

MAX_NODES = 10_000
MAX_TASKS_PER_NODE = 1024
MAX_GPUS_PER_NODE = 64
MAX_CPUS_PER_TASK = 1024
MAX_MEM_GB = 16384.0
MAX_TIME_LIMIT_MIN = 60 * 24 * 365


class Resources(BaseModel):
    model_config = ConfigDict(extra="forbid")

    nodes: int = Field(1, ge=1, le=MAX_NODES)
    tasks_per_node: int = Field(1, ge=1, le=MAX_TASKS_PER_NODE)
    gpus_per_node: int = Field(0, ge=0, le=MAX_GPUS_PER_NODE)
    cpus_per_task: int = Field(1, ge=1, le=MAX_CPUS_PER_TASK)
    mem_gb: float | None = Field(None, gt=0, le=MAX_MEM_GB, description="per node")
    time_limit_min: int = Field(60, ge=1, le=MAX_TIME_LIMIT_MIN)

    @property
    def num_tasks(self) -> int:
        return self.nodes * self.tasks_per_node

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    def resources(self) -> Resources:
        """Just the resources of a larger model (a request, a spec), e.g. to compare or store them."""
        return Resources.model_validate({name: getattr(self, name) for name in Resources.model_fields})


RESOURCE_FIELDS = tuple(Resources.model_fields)


def check_fit(res: Resources, partition: str, size: PartitionSize) -> None:
    """Whether ``res`` fits the partition's nodes: the launchers (before sbatch) and the gateway (at submission)
    ask the same question, so they give the same answer."""
    if res.nodes > size.nodes:
        raise SpecError("nodes", f"{res.nodes} nodes requested, partition {partition} has {size.nodes}")
    if res.tasks_per_node * res.cpus_per_task > size.max_cpus:
        raise SpecError(
            "tasks_per_node",
            f"{res.tasks_per_node} tasks x {res.cpus_per_task} CPUs per node requested, "
            f"the largest node of {partition} has {size.max_cpus} CPUs",
        )
    if res.mem_gb is not None and size.max_mem_mb and res.mem_gb * 1024 > size.max_mem_mb:
        raise SpecError("mem_gb", f"{res.mem_gb} GB per node requested, the largest node has {size.max_mem_mb} MB")
