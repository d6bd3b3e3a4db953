#!/bin/bash

# Parameters
#SBATCH --cpus-per-task=8
#SBATCH --error='/shared/jobs/gpu run/%j_0_log.err'
#SBATCH --gpus-per-node=4
#SBATCH --job-name=hpcgw-train
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --open-mode=append
#SBATCH --output='/shared/jobs/gpu run/%j_0_log.out'
#SBATCH --partition=team-b
#SBATCH --requeue
#SBATCH --signal=USR2@120
#SBATCH --time=240
#SBATCH --wckey=submitit

# setup

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output '/shared/jobs/gpu run/%j_%t_log.out' --error '/shared/jobs/gpu run/%j_%t_log.err' --kill-on-bad-exit=1 --distribution=block bash -c 'for v in ${!SLURM_*} ${!SLURMD_*} ${!SUBMITIT_*} ${!HPCGW_*}; do export "APPTAINERENV_$v=${!v}"; done; exec "$@"' hpcgw-apptainer apptainer exec --nv --cleanenv --bind '/shared/jobs/gpu run:/shared/jobs/gpu run' '/tmp/hpcgw golden/it'"'"'s "here"/intent classifier.sif' python -u -m submitit.core._submit '/shared/jobs/gpu run'


# teardown
hpcgw_rc=$?
hpcgw_id=${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}}
hpcgw_code=$(ls -tr '/shared/jobs/gpu run/markers'/"${hpcgw_id:-$SLURM_JOB_ID}.${SLURM_RESTART_COUNT:-0}".exit.* 2>/dev/null | while read -r f; do c=$(cat "$f"); if [ "$c" != 0 ]; then echo "$c"; break; fi; done)
exit "${hpcgw_code:-$hpcgw_rc}"