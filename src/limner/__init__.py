"""limner: image synthesis on your own machine.

The public Python API lives in `limner.api`; the most used names are re-exported here.
"""

__version__ = "0.1.0"

from limner.errors import (  # noqa: E402
    InputFileError,
    InvalidRequestError,
    LimnerError,
    ModelLoadError,
    UnsafeCheckpointError,
)

__all__ = [
    "InputFileError",
    "InvalidRequestError",
    "LimnerError",
    "ModelLoadError",
    "UnsafeCheckpointError",
    "__version__",
]
