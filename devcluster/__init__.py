"""A real Slurm cluster on one machine, for development, tests and the demo.

munged, a private MariaDB, slurmdbd, slurmctld and N slurmd (one per emulated node), all started by
`hpcgw cluster up` from Debian's packages, with every file they write under one project-local state directory.
"""

from devcluster.cluster import ClusterError, cluster_down, cluster_status, cluster_up
from devcluster.spec import ClusterSpec

__all__ = ["ClusterError", "ClusterSpec", "cluster_down", "cluster_status", "cluster_up"]
