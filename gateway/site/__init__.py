"""The site's side of tenancy: Slurm accounts and associations, Unix identities, the job folders and their
access lists."""
