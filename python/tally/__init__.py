"""tally: features for payments ML, computed by Scala kernels on Spark, stored in Delta, served online from tiles."""

from tally.definitions import Aggregation, Check, EmbeddingView, Entity, FeatureView, Source, Window
from tally.errors import (
    BadRequestError,
    DataError,
    DefinitionError,
    RegistryError,
    ServingError,
    SetupError,
    SpecChangedError,
    TallyError,
    UsageError,
)
from tally.feature_store import FeatureStore
from tally.labels import Label
from tally.online import OnlineClient
from tally.references import Derived, FeatureSet, Use
from tally.spark import session
from tally.store import read_features
from tally.tasks import Spine, Split, Task
from tally.training import training_set

__version__ = "0.1.0"

__all__ = [
    "Aggregation",
    "Check",
    "Derived",
    "EmbeddingView",
    "Entity",
    "FeatureSet",
    "Label",
    "FeatureStore",
    "FeatureView",
    "OnlineClient",
    "Source",
    "Spine",
    "Split",
    "Task",
    "Use",
    "Window",
    "read_features",
    "training_set",
    "BadRequestError",
    "DataError",
    "DefinitionError",
    "RegistryError",
    "ServingError",
    "SetupError",
    "SpecChangedError",
    "TallyError",
    "UsageError",
    "__version__",
    "session",
]
