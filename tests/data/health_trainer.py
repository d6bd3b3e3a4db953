"""A trainer that goes wrong on purpose, for the health-policy tests: real Horovod ranks, one allreduce per step.

Parameters (environment): EPOCHS, STEPS (per epoch), STEP_S (seconds a step takes), LOSSES (the loss of each
epoch, comma-separated, ``nan`` allowed; the last one repeats), HANG_RANK and HANG_AFTER (that rank stops,
alive, after that epoch: the others wait in the next allreduce), FREEZE_AFTER (on the first run, every rank
SIGSTOPs its task process and itself after that epoch, as a frozen node would look), HOLD_AFTER and HOLD_S (on the
first run, every rank waits HOLD_S seconds, default 300, after that epoch: a test that expects the gateway to stop
the run there does not race a trainer that could reach its end first). It reports progress
through HPCGW_PROGRESS_FILE, writes a metrics line per epoch and a checkpoint it resumes from after a requeue.
"""

import json
import os
import signal
import time
from pathlib import Path

import torch

import horovod.torch as hvd

hvd.init()
rank = hvd.rank()
env = os.environ
epochs, steps, step_s = int(env.get("EPOCHS", "3")), int(env.get("STEPS", "4")), float(env.get("STEP_S", "0.2"))
losses = [float(x) for x in env.get("LOSSES", "1.0").split(",")]
restart = int(env.get("HPCGW_RESTART_COUNT", "0"))
output = Path(env["MODEL_OUTPUT_DIR"])
checkpoint = output / "checkpoint.json"
metrics = Path(env["METRICS_FILE"])
progress = Path(env["HPCGW_PROGRESS_FILE"])

start = json.loads(checkpoint.read_text())["epoch"] if checkpoint.exists() else 0
if start and rank == 0:
    print(f"resuming after epoch {start} (run {restart})", flush=True)
for epoch in range(start + 1, epochs + 1):
    loss = losses[min(epoch, len(losses)) - 1]
    for step in range(steps):
        time.sleep(step_s)
        total = hvd.allreduce(torch.tensor([loss]), op=hvd.Sum, name=f"loss_{epoch}_{step}")
        with open(progress, "a") as fh:
            fh.write(json.dumps({"epoch": epoch, "step": (epoch - 1) * steps + step, "loss": loss}) + "\n")
    if rank == 0:
        with open(metrics, "a") as fh:
            fh.write(json.dumps({"epoch": epoch, "loss": loss, "world": float(total[0]) / loss, "restart": restart}))
            fh.write("\n")
        tmp = output / ".checkpoint.json.tmp"
        tmp.write_text(json.dumps({"epoch": epoch}))
        tmp.replace(checkpoint)
    hvd.allreduce(torch.zeros(1), name=f"barrier_{epoch}")
    now = time.time()
    if env.get("HANG_RANK") and rank == int(env["HANG_RANK"]) and epoch == int(env.get("HANG_AFTER", "1")):
        (output / f"hang.{rank}").write_text(json.dumps({"time": now, "host": env.get("SLURMD_NODENAME")}))
        time.sleep(3600)
    if env.get("FREEZE_AFTER") and restart == 0 and epoch == int(env["FREEZE_AFTER"]):
        (output / f"freeze.{rank}").write_text(json.dumps({"time": now, "host": env.get("SLURMD_NODENAME")}))
        os.kill(os.getppid(), signal.SIGSTOP)  # the task process: its heartbeat thread stops with it
        os.kill(os.getpid(), signal.SIGSTOP)
    if env.get("HOLD_AFTER") and restart == 0 and epoch == int(env["HOLD_AFTER"]):
        time.sleep(float(env.get("HOLD_S", "300")))
if rank == 0:
    (output / "model.json").write_text(json.dumps({"epochs": epochs, "loss": losses[-1]}))
hvd.shutdown()
