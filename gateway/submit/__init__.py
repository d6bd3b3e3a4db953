"""Admission: what turns a request into stored jobs (checks, the team's backlog, sweeps, functions, reruns,
images) and a stored job into a launcher spec. HTTP-free: the API and the worker call it."""
