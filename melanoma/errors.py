"""The one exception type for user mistakes: the CLI prints its message on one line, exit 2."""


class UserError(Exception):
    """A problem with the user's input (data, config, files) rather than a bug."""
