"""A Horovod allreduce that every rank reports on: the smallest job that proves the stack works end to end.

Each rank contributes ``rank + 1``; every rank must see ``size * (size + 1) / 2``. One JSON line per rank goes
to stdout, so the demo and the tests read real results, not exit codes alone.
"""

from __future__ import annotations

import json
import os
import socket
import sys


def main() -> int:
    import horovod.torch as hvd
    import torch

    hvd.init()
    value = torch.tensor([float(hvd.rank() + 1)], dtype=torch.float64)
    total = hvd.allreduce(value, op=hvd.Sum, name="smoke").item()
    expected = hvd.size() * (hvd.size() + 1) / 2
    report = {
        "rank": hvd.rank(),
        "size": hvd.size(),
        "local_rank": hvd.local_rank(),
        "local_size": hvd.local_size(),
        "cross_rank": hvd.cross_rank(),
        "cross_size": hvd.cross_size(),
        "node": os.environ.get("SLURMD_NODENAME", socket.gethostname()),
        "sum": total,
        "expected": expected,
        "ok": total == expected,
    }
    print("HPCGW_ALLREDUCE " + json.dumps(report, sort_keys=True), flush=True)
    hvd.shutdown()
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
