"""The launchers' errors: what a caller can act on, with the field to change where there is one."""

from __future__ import annotations


class SpecError(ValueError):
    """The spec cannot run where it is sent; ``field`` names what to change."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class SubmitError(RuntimeError):
    """sbatch refused the job or could not be reached."""
