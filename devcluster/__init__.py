"""A real Slurm cluster on one machine, for development, tests and the demo.

munged, a private MariaDB, slurmdbd, slurmctld and N slurmd (one per emulated node), all started by
`hpcgw cluster up` from Debian's packages, with every file they write under one project-local state directory.
"""

import os

from devcluster.cluster import ClusterError, cluster_down, cluster_status, cluster_up
from devcluster.spec import ClusterSpec


def use_local_cluster() -> ClusterSpec:
    """Point this process's Slurm commands (and its children's) at the development cluster, as
    ``eval "$(hpcgw cluster env)"`` does for a shell; for the examples and benchmarks, never the runtime."""
    spec = ClusterSpec.load()
    if spec is None:
        raise ClusterError("no local cluster here: run `make cluster-up` (or `hpcgw cluster up`) first")
    os.environ.update(spec.slurm_env)
    return spec


__all__ = ["ClusterError", "ClusterSpec", "cluster_down", "cluster_status", "cluster_up", "use_local_cluster"]
