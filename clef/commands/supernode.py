"""`clef supernode`: start this hospital's SuperNode from its site file, behind the app gate.

The SuperNode runs with the site's node config (identity, folders, privacy policy) and with
deploy/app_gate.py's ``flwr-clientapp`` first on its PATH, so a run's app bundle trains here only
if it is byte-identical to the clef-fl installed on this machine (docs/deployment.md).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

NAME = "supernode"
HELP = "start this site's flower-supernode from its site file, running only the installed ClientApp"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--site-config", required=True, type=Path, metavar="FILE", help="the site's TOML file")
    parser.add_argument("--dry-run", action="store_true", help="print the environment and command, start nothing")


def run(args: argparse.Namespace) -> int:
    from deploy.app_gate import LOG_NAME, check_flower_version, gate_environment, write_gate
    from deploy.site_config import SiteConfig, SiteConfigFileError

    try:
        site = SiteConfig.read(args.site_config)
        cmd = site.supernode_command()
        check_flower_version()
    except (SiteConfigFileError, RuntimeError) as exc:
        print(f"clef supernode: {exc}", file=sys.stderr)
        return 2
    work = site.work_dir
    gate = work / "app-gate"
    if args.dry_run:
        print(f"PATH={gate}:$PATH {shlex.join(cmd)}")
        return 0
    write_gate(gate, work / LOG_NAME)
    print(f"clef supernode: app gate {gate} (log {work / LOG_NAME}); starting {shlex.join(cmd)}", flush=True)
    os.execve(cmd[0], cmd, gate_environment(gate))
