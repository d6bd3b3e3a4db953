"""Submit Horovod training jobs to Slurm from a login node, with or without the gateway."""
