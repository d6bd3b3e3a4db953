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
# rank 0's node address for the ranks' rendezvous (DNS, else Slurm's NodeAddr), resolved here on the host
_hpcgw_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
_hpcgw_addr=$(getent ahostsv4 "$_hpcgw_node" | awk '{print $1; exit}')
[[ -n $_hpcgw_addr ]] || _hpcgw_addr=$(scontrol -o show node "$_hpcgw_node" | grep -o 'NodeAddr=[^ ]*' | cut -d= -f2)
export HPCGW_RENDEZVOUS_ADDR="${HPCGW_RENDEZVOUS_ADDR:-$_hpcgw_addr}"

# command
export SUBMITIT_EXECUTOR=slurm
srun --unbuffered --output '/shared/jobs/gpu run/%j_%t_log.out' --error '/shared/jobs/gpu run/%j_%t_log.err' --kill-on-bad-exit=1 --distribution=block bash -c '_hpcgw_image=$1; shift; _hpcgw_patterns=(); while [[ $# -gt 0 && $1 != -- ]]; do _hpcgw_patterns+=("$1"); shift; done; shift; if ! command -v apptainer >/dev/null 2>&1; then echo "hpcgw: apptainer is not on PATH on node $(</proc/sys/kernel/hostname)" >&2; exit 127; fi; if [[ -n $_hpcgw_image && ! ( -f $_hpcgw_image && -r $_hpcgw_image ) ]]; then echo "hpcgw: image $_hpcgw_image is not a readable file on node $(</proc/sys/kernel/hostname)" >&2; exit 127; fi; _hpcgw_lock=/dev/shm/sharens_instance_$PPID; if [[ ${3-} == --sharens ]] && [[ -L $_hpcgw_lock || ( -e $_hpcgw_lock && ! -O $_hpcgw_lock ) ]]; then echo "hpcgw: $_hpcgw_lock is not this user'"'"'s: this rank mounts the image itself" >&2; set -- "$1" "$2" "${@:4}"; fi; for _hpcgw_v in $(compgen -e); do case $_hpcgw_v in APPTAINER_CACHEDIR|APPTAINER_TMPDIR|SINGULARITY_CACHEDIR|SINGULARITY_TMPDIR) ;; APPTAINER*|SINGULARITY*) unset -v "$_hpcgw_v" ;; esac; done; for _hpcgw_v in $(compgen -e); do for _hpcgw_p in "${_hpcgw_patterns[@]}"; do if [[ $_hpcgw_v == $_hpcgw_p ]]; then _hpcgw_e=${!_hpcgw_v}; _hpcgw_e=${_hpcgw_e//"\\"/"\\\\"}; _hpcgw_e=${_hpcgw_e//"\$"/"\\\$"}; _hpcgw_e=${_hpcgw_e//"\`"/"\\\`"}; export "APPTAINERENV_$_hpcgw_v=$_hpcgw_e"; break; fi; done; done; exec "$@"' hpcgw-apptainer '/tmp/hpcgw golden/it'"'"'s "here"/intent classifier.sif' 'SLURM_*' 'SLURMD_*' 'SUBMITIT_*' 'HPCGW_*' 'NCCL_*' 'UCX_*' CUDA_VISIBLE_DEVICES 'OMPI_*' 'PMIX_*' 'PMI_*' -- apptainer exec --nv --cleanenv --no-home --no-mount cwd --pwd '/shared/jobs/gpu run' --bind '/shared/jobs/gpu run:/shared/jobs/gpu run' '/tmp/hpcgw golden/it'"'"'s "here"/intent classifier.sif' python -u -m submitit.core._submit '/shared/jobs/gpu run'


# teardown
hpcgw_rc=$?
hpcgw_id=${SLURM_ARRAY_JOB_ID:+${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}}
if [ -f '/shared/jobs/gpu run/markers'/"${hpcgw_id:-$SLURM_JOB_ID}.requeue" ]; then rm -f '/shared/jobs/gpu run/markers'/"${hpcgw_id:-$SLURM_JOB_ID}.requeue"; scontrol requeue "$SLURM_JOB_ID"; fi
hpcgw_code=$(ls -tr '/shared/jobs/gpu run/markers'/"${hpcgw_id:-$SLURM_JOB_ID}.${SLURM_RESTART_COUNT:-0}".exit.* 2>/dev/null | while read -r f; do c=$(cat "$f"); if [ "$c" != 0 ]; then echo "$c"; break; fi; done)
exit "${hpcgw_code:-$hpcgw_rc}"