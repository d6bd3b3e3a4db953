"""The training-job gateway: an HTTP service in front of a Slurm cluster."""
