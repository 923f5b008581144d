"""What goes wrong, said in one line: every failure the CLI expects becomes a `CliError` with a message that says
what happened and what to do, and `explain` turns the client's exceptions into one.
"""

from __future__ import annotations

import httpx

from cli.client import ApiError

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class CliError(Exception):
    """A failure to report as `error: <message>` with a non-zero exit code, never a traceback."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILURE):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


class JobFailed(CliError):
    """A job ended failed or cancelled; the message carries its reason."""


class Stopped(CliError):
    """The user pressed Ctrl-C: said as a note (not an error), with exit code 130."""

    def __init__(self, message: str):
        super().__init__(message, EXIT_INTERRUPTED)


def explain(error: BaseException, url: str) -> CliError:
    """The one-line version of an error raised while talking to the gateway at `url`."""
    if isinstance(error, CliError):
        return error
    if isinstance(error, ApiError):
        return _api_error(error, url)
    if isinstance(error, (httpx.ConnectError, httpx.ConnectTimeout)):
        return CliError(f"cannot reach the gateway at {url} - is `lfz up` running? (or pass --url / set LFZ_URL)")
    if isinstance(error, httpx.TimeoutException):
        return CliError(f"the gateway at {url} did not answer in time ({type(error).__name__}); try again, or "
                        f"check its log")
    if isinstance(error, httpx.UnsupportedProtocol):
        return CliError(f"{url} is not an http(s) URL; pass --url http://host:port", EXIT_USAGE)
    if isinstance(error, httpx.HTTPError):
        return CliError(f"the connection to the gateway at {url} failed: {type(error).__name__}: {error}")
    if isinstance(error, FileNotFoundError):
        return CliError(f"no such file: {error.filename}", EXIT_USAGE)
    if isinstance(error, IsADirectoryError):
        return CliError(f"{error.filename} is a folder, not a file", EXIT_USAGE)
    if isinstance(error, PermissionError):
        return CliError(f"permission denied: {error.filename}")
    if isinstance(error, UnicodeDecodeError):
        return CliError(f"the file is not UTF-8 text (invalid byte at offset {error.start})", EXIT_USAGE)
    return CliError(f"unexpected {type(error).__name__}: {error} (set LFZ_DEBUG=1 for the traceback)")


def _api_error(error: ApiError, url: str) -> CliError:
    where = f" ({error.field})" if error.field and error.field not in error.message else ""
    if error.status == 401:
        return CliError(f"the gateway at {url} needs an API key: set LFZ_API_KEY to a key it accepts "
                        f"({error.message})")
    if error.status == 403:
        return CliError(f"the gateway at {url} refused the API key in LFZ_API_KEY ({error.message})")
    if error.status == 429:
        return CliError(f"too many requests or open streams for this key: {error.message}; wait and retry")
    if error.code == "stream_lost":
        return CliError(f"{error.message}; the job goes on - `lfz events <job> --follow` picks it up again")
    if error.status >= 500 and error.code in ("error", "internal"):
        return CliError(f"the gateway at {url} failed ({error.status}): {error.message or 'no detail'}; "
                        f"read its log")
    return CliError(f"{error.message}{where}" if error.message else f"HTTP {error.status} {error.code}")
