#!/bin/bash

# Parameters
#SBATCH --account=team-a
#SBATCH --constraint=fast
#SBATCH --cpus-per-task=1
#SBATCH --error='/tmp/hpcgw golden/it'"'"'s "here"/jobs/%j_0_log.err'
#SBATCH --exclusive
#SBATCH --job-name=intent-classifier
#SBATCH --mem=1536M
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=2
#SBATCH --open-mode=append
#SBATCH --output='/tmp/hpcgw golden/it'"'"'s "here"/jobs/%j_0_log.out'
#SBATCH --partition=team-a
#SBATCH --qos=normal
#SBATCH --requeue
#SBATCH --signal=USR2@90
#SBATCH --time=30
#SBATCH --wckey=submitit

# setup
# rank 0's node address for the ranks' rendezvous (DNS, else Slurm's NodeAddr), resolved here on the host
_hpcgw_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
_hpcgw_addr=$(getent ahostsv4 "$_hpcgw_node" | awk '{print $1; exit}')
[[ -n $_hpcgw_addr ]] || _hpcgw_addr=$(scontrol -o show node "$_hpcgw_node" | grep -o 'NodeAddr=[^ ]*' | cut -d= -f2)
export HPCGW_RENDEZVOUS_ADDR="${HPCGW_RENDEZVOUS_ADDR:-$_hpcgw_addr}"
module load cuda

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output '/tmp/hpcgw golden/it'"'"'s "here"/jobs/%j_%t_log.out' --error '/tmp/hpcgw golden/it'"'"'s "here"/jobs/%j_%t_log.err' --kill-on-bad-exit=1 --distribution=block {python} -u -m submitit.core._submit '/tmp/hpcgw golden/it'"'"'s "here"/jobs'


# teardown
hpcgw_rc=$?
hpcgw_id=${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}}
if [ -f '/tmp/hpcgw golden/it'"'"'s "here"/jobs/markers'/"${hpcgw_id:-$SLURM_JOB_ID}.requeue" ]; then rm -f '/tmp/hpcgw golden/it'"'"'s "here"/jobs/markers'/"${hpcgw_id:-$SLURM_JOB_ID}.requeue"; scontrol requeue "$SLURM_JOB_ID"; fi
hpcgw_code=$(ls -tr '/tmp/hpcgw golden/it'"'"'s "here"/jobs/markers'/"${hpcgw_id:-$SLURM_JOB_ID}.${SLURM_RESTART_COUNT:-0}".exit.* 2>/dev/null | while read -r f; do c=$(cat "$f"); if [ "$c" != 0 ]; then echo "$c"; break; fi; done)
exit "${hpcgw_code:-$hpcgw_rc}"