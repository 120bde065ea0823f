"""Command-line interface: ``lfpdistill COMMAND``.

One module per group of commands (:mod:`.data`, :mod:`.models`, :mod:`.evaluate`,
:mod:`.study`), each adding its commands to the one Typer ``app`` here. User errors
(:class:`~lfpdistill.errors.LfpDistillError`) are printed as one line and exit with status 2,
and so are the operating system's refusals to read or write a file (permission, disk full, name
too long, a folder where a file is needed, ...): one line naming the path and the fix. Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import re
import sys
from pathlib import Path

import typer

from ..errors import LfpDistillError
from . import data, evaluate, models, realtime, study

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Cross-modal distillation from spike transformers to LFP transformers.")
for _group in (data, models, evaluate, study, realtime):
    _group.register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lfpdistill`` console script."""
    try:
        app(args=argv, prog_name="lfpdistill")
    except LfpDistillError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {os_error_line(e)}", file=sys.stderr)
        return 2
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


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
