"""Everything that talks to Slurm: the one command seam (:mod:`.shell`), the calls (:mod:`.commands`), and one
parser per Slurm output (:mod:`.sacct`, :mod:`.squeue`, :mod:`.sinfo`, :mod:`.scontrol`), with one time parser
(:mod:`.times`) and one job-id helper (:mod:`.ids`)."""
