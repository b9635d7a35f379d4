"""The one exception type for user mistakes: the CLI prints its message on one line, exit 2."""


class UserError(Exception):
    """A problem with the user's input (data, config, files) rather than a bug."""


def first_line(error: BaseException) -> str:
    """``Type: first line of the message`` (at most 240 characters) of any exception."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:240]}" if text else type(error).__name__


def unknown_name(what: str, name, known, where: str = "", match: str | None = None) -> UserError:
    """The error for a name not in ``known``: a "did you mean" hint (for ``match``, a
    normalised spelling, if given) and the known names."""
    import difflib

    known = [str(k) for k in known]
    hint = difflib.get_close_matches(str(match or name), known, n=1)
    did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
    prefix = f"{where}: " if where else ""
    return UserError(f"{prefix}unknown {what} {name!r}{did_you_mean}; known: {', '.join(known)}")

