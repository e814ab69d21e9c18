"""Errors a user can fix. The CLI prints them as one line and exits 2."""


class UserError(Exception):
    """Bad input: YAML, CLI flags, paths, corrupt run files. Printed as one line, exit code 2."""


class ConfigError(UserError):
    """A config field has a bad value. `path` is the dotted YAML path, e.g. `optimizer.lr`."""

    def __init__(self, path: str, message: str):
        self.path = path
        self.message = message
        super().__init__(f"{path}: {message}" if path else message)


class LockedError(UserError):
    """Another lrsweep process is writing the same sweep folder."""
