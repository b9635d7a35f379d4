"""Options shared by the subcommands, spelled the same everywhere.

``--config`` (a file or a shipped config's name), ``--set KEY=VALUE`` (repeatable),
``--seed N``, ``--limit N`` and ``--data-dir DIR``; ``config_from(args)`` turns them into a
validated RunConfig whose provenance records every override.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_command(commands, name: str, summary: str, examples: tuple[str, ...]):
    """A subcommand parser whose --help starts with its one-line ``summary`` and ends with
    ``examples`` (whole command lines, shown as written)."""
    lines = "\n".join(f"  {example}" for example in examples)
    return commands.add_parser(name, help=summary, description=summary,
                               epilog=f"examples:\n{lines}",
                               formatter_class=argparse.RawDescriptionHelpFormatter)


def add_config(parser, default: str = "default") -> None:
    """--config, --set, --seed for a subcommand that reads a config."""
    parser.add_argument("--config", default=default, metavar="PATH|NAME",
                        help=f"TOML/YAML config, or the name of a shipped one (default: {default}; "
                             f"shipped: default, paper, bench, tune, isic2017)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a config value, e.g. defaults.epochs=2 or evaluation.tta=true "
                             "(repeatable; validated like the file; recorded in the provenance)")
    parser.add_argument("--seed", type=int, default=None, metavar="N",
                        help="the config's seed (same as --set seed=N)")


def add_limit(parser) -> None:
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="use at most N images per class and split, a seeded sample (same "
                             "as --set data.limit=N; default: the config's data.limit, else all)")


def add_data_dir(parser, required: bool = False, positional: bool = False,
                 help_text: str = "root with train/ and test/ (default: the config's data.dir, else the "
                                  "generated synthetic set)"
                 ) -> None:
    """--data-dir DIR (and, for commands that always took it so, an optional DATA_DIR)."""
    if positional:
        parser.add_argument("data_dir_positional", nargs="?", type=Path, default=None,
                            metavar="DATA_DIR", help="same as --data-dir")
    parser.add_argument("--data-dir", type=Path, default=None, required=required and not positional,
                        help=help_text)


def data_dir_from(args, required: bool = False) -> Path | None:
    """The data folder from --data-dir or the positional DATA_DIR (not both)."""
    from melanoma.util.errors import UserError

    positional = getattr(args, "data_dir_positional", None)
    if positional is not None and args.data_dir is not None and positional != args.data_dir:
        raise UserError(f"two data folders given: {positional} and --data-dir {args.data_dir}")
    chosen = positional or args.data_dir
    if required and chosen is None:
        raise UserError("no data folder given: pass --data-dir DIR")
    return chosen


def check_data_dir(args, cfg) -> None:
    """A named data folder (--data-dir, else the config's data.dir) that is not a data set
    fails here, before TensorFlow or JAX is imported (a wrong path costs a second, not ten)."""
    from melanoma.data import layout

    chosen = data_dir_from(args) or cfg.data.dir
    if chosen:
        layout.discover(Path(chosen).expanduser())


def config_from(args):
    """The validated RunConfig the flags describe."""
    from melanoma import api

    return api.load_config(args.config, args.overrides, seed=args.seed,
                           limit=getattr(args, "limit", None))


def add_wide(parser) -> None:
    parser.add_argument("--wide", action="store_true",
                        help="print every column of the results table (default: the short "
                             "table; results.md and index.html hold both)")


def print_table(rows: list[dict], wide: bool = False) -> None:
    """The results table on stdout: the short one with its one-line key, or every column."""
    from melanoma.reporting.compact import footer, text_table

    print(text_table(rows, wide))
    if not wide:
        print(footer(rows))
