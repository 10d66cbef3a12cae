"""Exceptions a user can act on.

Every error raised where bad input enters limner is a `LimnerError`; the CLI prints its
message without a traceback and exits non-zero, the server turns it into a 4xx.
"""


class LimnerError(Exception):
    """Base class: the message says what is wrong and what to do about it."""

    exit_code = 1


class InvalidRequestError(LimnerError, ValueError):
    """A request value is out of range or inconsistent (size, steps, sampler, ...)."""

    exit_code = 2


class InputFileError(LimnerError):
    """An input file (image, mask, checkpoint) is missing, unreadable or malformed."""

    exit_code = 3


class ModelLoadError(LimnerError):
    """A model could not be found, recognised or loaded."""

    exit_code = 4


class UnsafeCheckpointError(ModelLoadError):
    """A pickle checkpoint was given where only safetensors are loaded implicitly."""
