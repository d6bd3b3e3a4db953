"""A trainer stand-in for failure tests: rank FAIL_RANK exits with FAIL_CODE after hvd.init(); the others hang."""

import os
import sys
import time

import torch  # noqa: F401  (before horovod.torch)

import horovod.torch as hvd

hvd.init()
if hvd.rank() == int(os.environ["FAIL_RANK"]):
    time.sleep(1)
    print(f"rank {hvd.rank()} failing on purpose", flush=True)
    sys.exit(int(os.environ["FAIL_CODE"]))
time.sleep(600)
