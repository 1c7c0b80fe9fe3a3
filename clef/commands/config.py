"""`clef config`: print the resolved experiment configuration."""

from __future__ import annotations

import argparse
import json

from clef.cli import add_config_arguments, config_from_args

NAME = "config"
HELP = "print the resolved configuration (defaults + file + --set overrides) as JSON"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--flat", action="store_true", help="print Flower's flat run_config form")


def run(args: argparse.Namespace) -> int:
    from clef_core.config import flatten

    cfg = config_from_args(args)
    print(json.dumps(flatten(cfg) if args.flat else cfg, indent=2))
    return 0
