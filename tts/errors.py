"""The one exception type that means "the user asked for something that cannot be done".

The CLI prints these as a single line and exits non-zero; any other exception is a bug and keeps
its traceback.
"""

from pydantic import ValidationError


class TTSError(Exception):
    """Bad input from the user: a missing folder, an unknown name, a malformed file."""


def invalid_options(what: str, error: ValidationError) -> TTSError:
    """A one-line `TTSError` listing every field pydantic rejected in `what`."""
    problems = "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg']}" for e in error.errors()
    )
    return TTSError(f"bad {what}: {problems}")
