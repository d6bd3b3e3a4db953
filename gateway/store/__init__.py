"""Persistence: the tables, the engine and its migrations, and the submission path's Core statements."""
