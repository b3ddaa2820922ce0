"""One exception type for problems a user can fix; the CLI prints it as one line. One warning type for inputs
that run but may give wrong answers; the CLI turns it into a refusal."""

__all__ = ["EieError", "InputRangeWarning"]


class EieError(Exception):
    """Bad input or a missing prerequisite: the message names the problem and the fix."""


class InputRangeWarning(UserWarning):
    """Inputs outside the range the model was calibrated on: they saturate in the chip's fixed point."""
