"""A DDP job's smallest proof: every rank contributes rank + 1 to an allreduce and reports what it got back."""

import json
import os

import torch
import torch.distributed as dist

dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
rank, size = dist.get_rank(), dist.get_world_size()
value = torch.tensor([float(rank + 1)])
dist.all_reduce(value)
report = {"rank": rank, "size": size, "sum": value.item(), "local_rank": int(os.environ["LOCAL_RANK"])}
print(f"HPCGW_RANK_REPORT {json.dumps(report)}", flush=True)
if int(os.environ.get("FAIL_RANK", "-1")) == rank:
    print(f"rank {rank} failing on purpose", flush=True)
    # As the trainer protocol asks of DDP trainers: a process group left alive at exit can abort the interpreter
    # (SIGABRT, "terminate called without an active exception"), and 134 would replace the exit code.
    dist.destroy_process_group()
    raise SystemExit(int(os.environ.get("FAIL_CODE", "3")))
if os.environ.get("FAIL_RANK"):
    import time

    time.sleep(600)  # the others wait: a failing rank must end the job at once
dist.barrier()
dist.destroy_process_group()
