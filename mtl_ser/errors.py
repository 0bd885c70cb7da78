"""Errors shared by the layers."""


class ConfigError(ValueError):
    """A config value that cannot work; the message names the field and the fix."""


class WorkdirError(RuntimeError):
    """The workdir cannot be used as asked; the message says why and what to do."""


class UsageError(ValueError):
    """Flags that cannot go together (a mode without --workdir, ...); the
    message names the flag."""
