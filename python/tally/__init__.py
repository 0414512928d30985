"""tally: batch features for payments ML, computed by Scala kernels on Spark and stored in Delta."""

from tally.definitions import Aggregation, Check, Entity, FeatureView, Source, Window
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
from tally.store import read_features
from tally.training import training_set

__version__ = "0.1.0"

__all__ = [
    "Aggregation",
    "Check",
    "Entity",
    "FeatureView",
    "Source",
    "Window",
    "read_features",
    "training_set",
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
