"""Errors meant for people: a user's mistake ends with one clear line, no traceback."""


class UserError(Exception):
    """A mistake in the command, the config or the data that the user can fix.

    The message says what is wrong and how to fix it. Entry points print it on
    one line and exit non-zero; anything else that raises is a bug and keeps its
    traceback.
    """


class ConfigError(UserError):
    """One or more invalid config values, all reported at once."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        if len(problems) == 1:
            msg = f"invalid config: {problems[0]}"
        else:
            msg = f"invalid config ({len(problems)} problems): " + "; ".join(problems)
        super().__init__(msg)


class Interrupted(Exception):
    """Training was stopped by a signal after writing a checkpoint."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code
