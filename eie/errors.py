"""One exception type for problems a user can fix; the CLI prints it as one line."""

__all__ = ["EieError"]


class EieError(Exception):
    """Bad input or a missing prerequisite: the message names the problem and the fix."""
