"""What runs inside the job, on every rank: topology from Slurm's variables, the Gloo rendezvous, the trainer
task, and the marker files the gateway reads. Nothing here imports the login-node library."""
