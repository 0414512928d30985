"""tally: batch features for payments ML, computed by Scala kernels on Spark and stored in Delta."""

from tally.errors import (
    DataError,
    DefinitionError,
    RegistryError,
    SetupError,
    SpecChangedError,
    TallyError,
    UsageError,
)
from tally.spark import session

__version__ = "0.1.0"

__all__ = [
    "DataError",
    "DefinitionError",
    "RegistryError",
    "SetupError",
    "SpecChangedError",
    "TallyError",
    "UsageError",
    "__version__",
    "session",
]
