"""The one exception type for user mistakes: the CLI prints its message on one line, exit 2."""


class UserError(Exception):
    """A problem with the user's input (data, config, files) rather than a bug."""


def unknown_name(what: str, name, known, where: str = "", match: str | None = None) -> UserError:
    """The error for a name not in ``known``: a "did you mean" hint (for ``match``, a
    normalised spelling, if given) and the known names."""
    import difflib

    known = [str(k) for k in known]
    hint = difflib.get_close_matches(str(match or name), known, n=1)
    did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
    prefix = f"{where}: " if where else ""
    return UserError(f"{prefix}unknown {what} {name!r}{did_you_mean}; known: {', '.join(known)}")


SAFE_NAME_RULE = ("letters, digits, '.', '_' and '-' only, starting with a letter or digit "
                  "(no '/', no '..', at most 100 characters)")


def check_safe_name(value, what: str) -> str:
    """``value`` if it is safe to use as ONE path component (a folder or file name under a
    folder the user named), else a UserError stating the rule."""
    import re

    if (not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", value)
            or ".." in value):
        raise UserError(f"{what} must be a safe name ({SAFE_NAME_RULE}), got {value!r}")
    return value


def confined(path, root):
    """``path`` resolved, if it lies strictly inside ``root`` (resolved); else a UserError.
    Every deletion goes through this, so nothing outside the folder the user named is touched."""
    from pathlib import Path

    path, root = Path(path).resolve(), Path(root).resolve()
    if path == root or root not in path.parents:
        raise UserError(f"refusing to touch {path}: it is not inside {root}")
    return path
