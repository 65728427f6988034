"""The toolkit's own error types: bad input a user can fix.

The command-line runner (:mod:`core.cli`) turns these, and only these, into a one-line
``error: ...`` message with exit status 2; any other exception is a bug and keeps its
traceback. Each message names the file, line or key and says how to fix it.
They derive from ValueError, so code that expects a ValueError for bad values still works.
"""


class ToolkitError(ValueError):
    """Base class: bad input (configuration, data, checkpoint) that the message explains."""


class ConfigError(ToolkitError):
    """Invalid configuration: unknown key, bad value, missing or unusable path."""


class DataError(ToolkitError):
    """A list, audio, embeddings or score file cannot be used; the message names it."""


class TrialListError(DataError):
    """A trial list cannot be used (bad line, mixed labels, no trials); names the file and line."""


class CheckpointError(ToolkitError):
    """A checkpoint or model file is missing, unreadable or does not fit the model."""


class OutputError(ToolkitError):
    """An output file (checkpoint, scores, embeddings, ...) could not be written."""


class TrainingError(ToolkitError):
    """Training cannot go on (e.g. a run of non-finite losses or gradients); names the last good checkpoint."""


class Interrupted(ToolkitError):
    """The run was stopped by a signal after writing a resumable checkpoint; exits with 128 + the signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum
