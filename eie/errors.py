"""One exception type for problems a user can fix; the CLI prints it as one line. One warning type for inputs
that run but may give wrong answers; the CLI turns it into a refusal."""

__all__ = ["EieError", "ConfigValueError", "ConfigTypeError", "InputRangeWarning"]


class EieError(Exception):
    """Bad input or a missing prerequisite: the message names the problem and the fix."""


class ConfigValueError(EieError, ValueError):
    """A chip parameter out of its range: an `EieError` to the user, a ValueError to code that catches those."""


class ConfigTypeError(EieError, TypeError):
    """A chip parameter of the wrong type: an `EieError` to the user, a TypeError to code that catches those."""


class InputRangeWarning(UserWarning):
    """Inputs outside the range the model was calibrated on: they saturate in the chip's fixed point."""
