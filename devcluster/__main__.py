"""``python -m devcluster up|status|down|env``: the same commands as ``hpcgw cluster``."""

from devcluster.cli import app

app(prog_name="python -m devcluster")
