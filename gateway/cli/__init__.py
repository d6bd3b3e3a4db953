"""The `hpcgw` command line."""
