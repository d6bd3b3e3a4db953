"""A job of a coalesced array: says who it is on stdout and in its metrics file, sleeps SLEEP_S, then exits with
EXIT_CODE, so that a test can tell each element's own log, metrics and exit code apart."""

import json
import os
import sys
import time

job, value = os.environ["JOB_ID"], os.environ.get("VALUE", "")
print(f"job {job} value {value} element {os.environ.get('SLURM_ARRAY_TASK_ID')}", flush=True)
with open(os.environ["METRICS_FILE"], "a") as fh:
    fh.write(json.dumps({"epoch": 1, "value": float(value or 0), "job": job}) + "\n")
time.sleep(float(os.environ.get("SLEEP_S", "0")))
sys.exit(int(os.environ.get("EXIT_CODE", "0")))
