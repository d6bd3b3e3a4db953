"""A sweep task stand-in: records the parameters it was given in its metrics file, then takes a few seconds.

It fails (exit 4) while the file named by FAIL_WHILE_EXISTS exists, so a test can make tasks fail and then
let their retries succeed. DONE_DIR, if set, gets one file per run, so a test can count how often each ran.
"""

import json
import os
import sys
import time

params = {k: os.environ[k] for k in ("LR", "BATCH_SIZE", "NAME") if k in os.environ}
task = os.environ.get("SLURM_ARRAY_TASK_ID")
if os.environ.get("DONE_DIR"):
    marker = os.path.join(os.environ["DONE_DIR"], f"{os.environ.get('NAME', 'x')}.{os.environ['SLURM_JOB_ID']}")
    with open(marker, "w") as fh:
        fh.write(task or "")
time.sleep(float(os.environ.get("SLEEP_S", "3")))
flag = os.environ.get("FAIL_WHILE_EXISTS")
if flag and os.path.exists(flag):
    print(f"failing on purpose: {flag} exists", flush=True)
    sys.exit(4)
score = float(params.get("LR", 0)) * 10 + float(params.get("BATCH_SIZE", 0)) / 100
if os.environ.get("METRICS_FILE"):
    with open(os.environ["METRICS_FILE"], "a") as fh:
        fh.write(json.dumps({"epoch": 1, "accuracy": score, "params": params, "array_task_id": task}) + "\n")
