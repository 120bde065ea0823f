"""Command-line interface: ``lfpdistill COMMAND``.

One module per group of commands (:mod:`.data`, :mod:`.models`, :mod:`.evaluate`,
:mod:`.study`), each adding its commands to the one Typer ``app`` here. User errors
(:class:`~lfpdistill.errors.LfpDistillError`) are printed as one line and exit with status 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys

import typer

from ..errors import LfpDistillError
from . import data, evaluate, models, study

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True,
                  help="Cross-modal distillation from spike transformers to LFP transformers.")
for _group in (data, models, evaluate, study):
    _group.register(app)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lfpdistill`` console script."""
    try:
        app(args=argv, prog_name="lfpdistill")
    except LfpDistillError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
