"""Errors shared by the layers."""


class ConfigError(ValueError):
    """A config value that cannot work; the message names the field and the fix."""
