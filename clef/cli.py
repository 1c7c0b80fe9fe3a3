"""`clef` command line: one subcommand per module in ``clef.commands``.

A command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``. Commands that read an experiment call
:func:`add_config_arguments` and :func:`config_from_args`, so every command
shares one configuration system (``configs/*.toml`` plus ``--set`` overrides).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

import clef.commands

if TYPE_CHECKING:
    from clef_core.experiment import Experiment


def package_version() -> str:
    try:
        return version("clef-fl")
    except PackageNotFoundError:
        return "0+unknown"


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="experiment file (a path, or a name in configs/)")
    parser.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        dest="overrides",
        help="override one config key, e.g. --set loss.tau=0.1 (repeatable)",
    )


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The experiment as its nested dict (``clef config`` prints it)."""
    from clef_core.config import load_config

    return load_config(args.config, args.overrides)


def experiment_from_args(args: argparse.Namespace) -> Experiment:
    """``--config`` and ``--set`` as a checked :class:`~clef_core.experiment.Experiment`."""
    from clef_core.experiment import load_experiment

    return load_experiment(args.config, args.overrides)


def command_modules() -> list[Any]:
    modules = []
    for info in pkgutil.iter_modules(clef.commands.__path__):
        if not info.name.startswith("_"):
            modules.append(importlib.import_module(f"clef.commands.{info.name}"))
    return sorted(modules, key=lambda m: m.NAME)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clef",
        description="clef-fl: federated, privacy-preserving CLEF pretraining of ECG foundation models.",
    )
    parser.add_argument("--version", action="version", version=f"clef-fl {package_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in command_modules():
        cmd = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    from clef_core.config import ConfigError

    try:
        return int(args.handler(args) or 0)
    except ConfigError as exc:
        print(f"clef {args.command}: config error: {exc}", file=sys.stderr)
        return 2
