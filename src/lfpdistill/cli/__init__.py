"""Command-line interface: ``lfpdistill COMMAND``.

One module per group of commands (:mod:`.data`, :mod:`.models`, :mod:`.evaluate`,
:mod:`.study`, :mod:`.realtime`), each adding its commands to the one Typer ``app`` here.

Every error a user can cause is printed as one ``error: ...`` line, and the exit status says
which kind it was (README, "Exit codes"):

- ``0`` done; ``1`` a bug (anything unexpected keeps its traceback);
- ``2`` usage: the command line or a config is wrong (an unknown option, a value outside an
  option's choices, :class:`~lfpdistill.errors.ConfigError`);
- ``3`` data: an input file, store, raw recording or checkpoint is missing, damaged or does not
  fit (:class:`~lfpdistill.errors.DataValidationError`, ``StoreError``, ``RawDataError``,
  ``CheckpointMismatchError`` and any other :class:`~lfpdistill.errors.LfpDistillError`);
- ``4`` environment: the operating system refused to read or write a file (permission, disk
  full, name too long, ...; one line naming the path and the fix) or a download failed;
- ``130`` interrupted.
"""

from __future__ import annotations

import errno
import re
import sys
from pathlib import Path
from typing import Annotated

import typer

from ..allocator import tune_cpu_allocator  # standard library only: cheap
from ..errors import ConfigError, LfpDistillError
from . import data, evaluate, models, realtime, study

EXIT_OK, EXIT_BUG, EXIT_USAGE, EXIT_DATA, EXIT_ENVIRONMENT, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Cross-modal distillation from spike transformers to LFP transformers.")
for _group in (data, models, evaluate, study, realtime):
    _group.register(app)


def version() -> str:
    """The installed package's version."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _version

    try:
        return _version("lfpdistill")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "unknown"


def _show_version(show: bool) -> None:
    if show:
        typer.echo(f"lfpdistill {version()}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[bool, typer.Option(
        "--version", is_eager=True, callback=_show_version,
        help="print the version and exit")] = False,
) -> None:
    """Cross-modal distillation from spike transformers to LFP transformers."""


def exit_code(e: BaseException) -> int:
    """The exit status of an error (module docstring)."""
    from ..readers.download import DownloadError  # standard library only: cheap

    if isinstance(e, ConfigError):
        return EXIT_USAGE
    if isinstance(e, DownloadError | OSError):
        return EXIT_ENVIRONMENT
    if isinstance(e, LfpDistillError):
        return EXIT_DATA
    return EXIT_BUG


def report_error(e: LfpDistillError | OSError) -> int:
    """Print a known problem (bad data, config or environment) as the CLI's one-line error on
    stderr and return its exit code; scripts built on the library use it too."""
    line = str(e) if isinstance(e, LfpDistillError) else os_error_line(e)
    print(f"error: {line}", file=sys.stderr)
    return exit_code(e)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lfpdistill`` console script."""
    tune_cpu_allocator()  # large CPU tensors reuse freed memory (lfpdistill.allocator)
    try:
        code = app(args=argv, prog_name="lfpdistill", standalone_mode=False)
    except (LfpDistillError, OSError) as e:
        return report_error(e)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:
        # click's exceptions (vendored by newer typer, the click package under older ones),
        # recognised by name so that either works
        kinds = {c.__name__ for c in type(e).__mro__}
        if "NoArgsIsHelpError" in kinds:  # plain 'lfpdistill': the help, as a usage error
            e.show()  # type: ignore[attr-defined]
            return EXIT_USAGE
        if "ClickException" in kinds:
            print(f"error: {_usage_line(e)}", file=sys.stderr)
            return EXIT_USAGE
        if "Abort" in kinds:
            print("interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        raise
    return code if isinstance(code, int) else EXIT_OK


def _usage_line(e: Exception) -> str:
    """A command-line mistake in one line, with where to find the right usage."""
    message = e.format_message()  # type: ignore[attr-defined]
    text = " ".join(message.split()).replace("Value error, ", "")
    ctx = getattr(e, "ctx", None)
    where = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    return f"{text}{where}"


_FIXES = {
    errno.EACCES: ("permission denied", "choose a folder you can write to, or change its "
                   "permissions"),
    errno.EPERM: ("operation not permitted", "choose a folder you can write to, or change its "
                  "permissions"),
    errno.EROFS: ("read-only file system", "write to another folder"),
    errno.ENOSPC: ("no space left on the device", "free some space or write to another disk"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or write to another disk"),
    errno.EFBIG: ("file too large for this file system or limit",
                  "write to another disk or raise the file size limit"),
    errno.ENAMETOOLONG: ("file name too long", "use shorter names (--out, session names)"),
    errno.EISDIR: ("is a folder where a file is needed", "pass a file path (e.g. --out out.json)"),
    errno.ENOTDIR: ("a part of the path is a file, not a folder", "choose another path"),
    errno.EEXIST: ("exists and is not a folder", "pass a new or existing folder"),
    errno.ENOENT: ("no such file or folder", "check the path"),
}


def os_error_line(e: OSError) -> str:
    """One line for an operating-system error: what happened, to which path, and the fix.
    HDF5's errors carry the errno and the file name only in their text; they are read there."""
    text = str(e)
    code = e.errno
    if code is None:
        found = re.search(r"errno = (\d+)", text)
        code = int(found.group(1)) if found else None
    path = e.filename
    if path is None:
        found = re.search(r"(?:file)?name = '([^']+)'", text)
        path = found.group(1) if found else None
    path = _shown_path(str(path)) if path is not None else None
    first = text.splitlines()[0] if text else type(e).__name__
    what, fix = _FIXES.get(code, (e.strerror or first, "check the path and try again"))
    where = f" '{path}'" if path else ""
    return f"cannot use{where}: {what}; {fix}"


def _shown_path(path: str) -> str:
    """The file the user asked for, not the hidden temporary name it is written under
    (``.NAME.XXXXXXXX.tmpSUFFIX``, see :func:`lfpdistill.data.store.atomic_path`)."""
    p = Path(path)
    found = re.fullmatch(r"\.(.+)\.[^.]+\.tmp.*", p.name)
    return str(p.with_name(found.group(1))) if found else path


if __name__ == "__main__":
    sys.exit(main())
