"""Every user-facing tally error, in one catalogue.

Each error has a stable code and a message that says what is wrong, where (view, feature, source, column, file,
rows), and how to fix it. The CLI maps the classes to exit codes in one place (`tally.cli`): data and validation
errors exit 1, usage errors exit 2.
"""

from __future__ import annotations


class TallyError(Exception):
    """Base of all tally errors. `code` is stable; `exit_code` is what the CLI returns."""

    code = "TALLY"
    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None, details: dict | None = None):
        self.message = message
        self.hint = hint
        self.details = details or {}
        super().__init__(self.render())

    def render(self) -> str:
        text = f"[{self.code}] {self.message}"
        if self.hint:
            text += f"\n  fix: {self.hint}"
        return text


class DefinitionError(TallyError):
    """A feature definition is invalid (bad window, unknown function, duplicate names, ...)."""

    code = "DEFINITION"


class RegistryError(TallyError):
    """The feature repository cannot be loaded or planned (duplicate names, unknown view, spec drift)."""

    code = "REGISTRY"


class SpecChangedError(RegistryError):
    """A view's definition changed but its version did not."""

    code = "SPEC_CHANGED"


class DataError(TallyError):
    """Source, spine or table data violates a contract; nothing was written."""

    code = "DATA"


class SetupError(TallyError):
    """tally is not set up: a JAR or tool is missing."""

    code = "SETUP"


class UsageError(TallyError):
    """The command or call is used wrongly (unknown option value, missing argument)."""

    code = "USAGE"
    exit_code = 2


class BadRequestError(TallyError):
    """An online request names something unknown or malformed: a view, a feature, a key, a time (HTTP 4xx)."""

    code = "BAD_REQUEST"


class ServingError(TallyError):
    """The online server or store cannot answer: unreachable, stopped, or failed (HTTP 5xx)."""

    code = "SERVING"


class ConcurrentWriteError(TallyError):
    """Another writer committed to the same table range first; retrying is safe."""

    code = "CONCURRENT_WRITE"
