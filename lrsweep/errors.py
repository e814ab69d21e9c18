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


class ParameterError(UserError):
    """A library function got a bad argument. `param` is the Python parameter name
    (`tolerance`, `workers`); the CLI rewrites it to its flag (`--tolerance`) when printing."""

    def __init__(self, param: str, message: str):
        self.param = param
        self.message = message
        super().__init__(f"{param}: {message}")

    def renamed(self, name: str) -> "ParameterError":
        """The same error under another name (the CLI's flag for the parameter)."""
        return ParameterError(name, self.message)

    def with_flags(self, flags: dict[str, str]) -> UserError:
        """The message as the CLI shows it, with parameters written as flags (`flags`: e.g.
        {"min_lr": "--min-lr"}): the subject, and every other parameter the message names in
        backticks (`max_lr`)."""
        import re

        message = re.sub(r"`(\w+)`", lambda m: flags.get(m.group(1), m.group(1)), self.message)
        return UserError(f"{flags.get(self.param, self.param)}: {message}")


class ExperimentMismatch(ParameterError):
    """`lrsweep run` into a folder that holds another experiment (config/experiment.py).
    `diffs`: (field, folder's value, new value)."""

    def __init__(self, folder, diffs: list, message: str):
        self.folder, self.diffs = folder, diffs
        super().__init__("add_experiment", message)

    def __str__(self) -> str:
        return self.message

    def with_flags(self, flags: dict[str, str]) -> UserError:
        import re

        return UserError(re.sub(r"`(\w+)`", lambda m: flags.get(m.group(1), m.group(1)), self.message))
