"""Tasks: named, versioned ML tasks over the feature repository (docs/tasks.md).

`definition` declares (Task, Spine, Split: frozen, validated when built, no Spark); `run` executes a task
through the FeatureStore (training set + manifest, MLlib model, metrics); `metrics` computes the metrics in numpy;
`report` writes report.md and the plots.
"""

from tally.tasks.definition import Spine, Split, Task

__all__ = ["Spine", "Split", "Task"]
