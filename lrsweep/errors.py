"""Errors a user can fix. The CLI prints them as one line and exits 2."""
import reprlib

QUOTE_LIMIT = 200  # characters of a user's value an error quotes (an alias bomb is megabytes)
MESSAGE_LIMIT = 1000  # characters of one error message

_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxlist, _repr.maxtuple, _repr.maxdict, _repr.maxset = 4, 24, 24, 12, 12
_repr.maxstring = _repr.maxother = _repr.maxlong = QUOTE_LIMIT


def shorten(text: str, limit: int = QUOTE_LIMIT) -> str:
    """`text` cut to `limit` characters, marked with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def quote(value) -> str:
    """repr(value) for an error message: at most QUOTE_LIMIT characters, and bounded work
    (reprlib stops early in deep or long values)."""
    return shorten(_repr.repr(value))


class LrsweepWarning(UserWarning):
    """Something the user should know, the command goes on (a damaged file skipped or redone,
    a limit applied). The CLI shows it as one `warning:` line."""


class UserError(Exception):
    """Bad input: YAML, CLI flags, paths, corrupt run files. Printed as one line, exit code 2."""


class ConfigError(UserError):
    """A config field has a bad value. `path` is the dotted YAML path, e.g. `optimizer.lr`."""

    def __init__(self, path: str, message: str):
        self.path = path = shorten(path)
        self.message = message = shorten(message, MESSAGE_LIMIT)
        super().__init__(f"{path}: {message}" if path else message)


class LockedError(UserError):
    """Another lrsweep process is writing the same sweep folder."""


class StorageError(UserError, OSError):
    """A file lrsweep writes (or the folder it goes in) cannot be written: a read-only file
    system, a full disk, a folder where a file belongs. An OSError too, so code that survives
    a failed write (a checkpoint) still does."""


class ParameterError(UserError):
    """A library function got a bad argument. `param` is the Python parameter name
    (`tolerance`, `workers`); the CLI rewrites it to its flag (`--tolerance`) when printing.
    A subclass whose message says everything itself sets `named = False` (no `param:` prefix)."""
    named = True

    def __init__(self, param: str, message: str):
        self.param = param
        self.message = message
        super().__init__(f"{param}: {message}" if self.named else message)

    def with_flags(self, flags: dict[str, str]) -> UserError:
        """The message as the CLI shows it, with parameters written as flags (`flags`: e.g.
        {"min_lr": "--min-lr"}): the subject, and every other parameter the message names in
        backticks (`max_lr`)."""
        import re

        message = re.sub(r"`(\w+)`", lambda m: flags.get(m.group(1), m.group(1)), self.message)
        return UserError(f"{flags.get(self.param, self.param)}: {message}" if self.named else message)


class ExperimentMismatch(ParameterError):
    """`lrsweep run` into a folder that holds another experiment (config/experiment.py).
    `diffs`: (field, folder's value, new value)."""
    named = False

    def __init__(self, folder, diffs: list, message: str):
        self.folder, self.diffs = folder, diffs
        super().__init__("add_experiment", message)


class GridTooLarge(ParameterError):
    """A sweep's grid has more cells than `max_runs` allows (counted before expanding it)."""
    named = False

    def __init__(self, count: int, limit: int, sizes: str):
        self.count, self.limit = count, limit
        super().__init__("max_runs", f"sweep: the grid has {count} runs ({sizes}), more than the limit of "
                                     f"{limit}: make an axis shorter, or raise `max_runs` if you mean it")
