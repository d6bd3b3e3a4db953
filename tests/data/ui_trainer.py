"""A trainer for the dashboard's tests: one metrics line per epoch, EPOCH_S seconds apart, whose accuracy rises
with LR (so that a sweep has a clear best task). One rank; it initialises Horovod, which is what makes the
job `running` (the start marker) rather than `launching`."""

import json
import os
import time
from pathlib import Path

import horovod.torch as hvd

hvd.init()

env = os.environ
epochs, epoch_s, lr = int(env.get("EPOCHS", "3")), float(env.get("EPOCH_S", "1")), float(env.get("LR", "0.1"))
metrics = Path(env["METRICS_FILE"])
for epoch in range(1, epochs + 1):
    time.sleep(epoch_s)
    loss = round(1.0 / (epoch * (1 + lr)), 4)
    accuracy = round(min(0.99, 0.5 + 0.4 * lr + 0.01 * epoch), 4)
    with metrics.open("a") as handle:
        handle.write(json.dumps({"epoch": epoch, "loss": loss, "accuracy": accuracy}) + "\n")
    print(f"epoch {epoch}: loss {loss} accuracy {accuracy}", flush=True)
Path(env["MODEL_OUTPUT_DIR"], "model.json").write_text(json.dumps({"lr": lr}))
