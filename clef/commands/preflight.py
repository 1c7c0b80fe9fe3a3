"""`clef preflight`: check a site's configuration and data before it joins a run (deploy/preflight.py).

Nothing is sent anywhere: the records are read locally, the certificate and key are only parsed.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from clef.cli import add_config_arguments, experiment_from_args

NAME = "preflight"
HELP = "validate a site's config, data, device, privacy settings, CA and node key locally (sends nothing)"
MARK = {"ok": "OK  ", "warn": "WARN", "fail": "FAIL"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--site-config", type=Path, metavar="FILE",
                        help="the site's TOML file (docs/deployment.md); or give --data-dir etc.")
    parser.add_argument("--data-dir", type=Path, help="the site's cohort folder (without --site-config)")
    parser.add_argument("--site-id", default="", help="its name in logs (default: the folder name)")
    parser.add_argument("--work-dir", type=Path, help="store, caches and site.log (default ~/.clef/sites/<site-id>)")
    parser.add_argument("--device", default="", help="cpu | cuda | cuda:N (default: train.device)")
    parser.add_argument("--privacy-mode", choices=("off", "patient"), default="off",
                        help="the site's privacy policy (without --site-config; default off)")
    parser.add_argument("--ca", type=Path, help="the CA certificate (root-certificates)")
    parser.add_argument("--key", type=Path, help="the SuperNode private key (auth-supernode-private-key)")
    parser.add_argument("--max-records", type=int, default=0, metavar="N",
                        help="read only the first N records (0: all)")
    parser.add_argument("--show-bad", type=int, default=20, metavar="N", help="list at most N bad records (default 20)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--print-command", action="store_true",
                        help="also print the flower-supernode command line the site config describes")
    add_config_arguments(parser)


def _site(args: argparse.Namespace):
    from deploy.site_config import SiteConfig

    if args.site_config:
        return SiteConfig.read(args.site_config)
    if not args.data_dir:
        raise ValueError("give --site-config FILE or --data-dir DIR")
    node = {"data-dir": str(args.data_dir), "privacy-mode": args.privacy_mode}
    for key, value in (("site-id", args.site_id), ("work-dir", args.work_dir), ("device", args.device)):
        if value:
            node[key] = str(value)
    return SiteConfig.from_mapping({"node-config": node, **({"root-certificates": str(args.ca)} if args.ca else {}),
                                    **({"auth-supernode-private-key": str(args.key)} if args.key else {})})


def run(args: argparse.Namespace) -> int:
    from deploy.preflight import preflight
    from deploy.site_config import SiteConfigFileError

    try:
        site = _site(args)
    except (SiteConfigFileError, ValueError) as exc:
        print(f"clef preflight: {exc}", file=sys.stderr)
        return 2
    report = preflight(site, experiment_from_args(args), args.max_records)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
    else:
        for check in report.checks:
            print(f"{MARK[check.status]} {check.name:<9} {check.detail}")
        for record, reason, detail in report.bad_records[:args.show_bad]:
            print(f"     bad record {record}: {reason}{f' ({detail})' if detail else ''}")
        if len(report.bad_records) > args.show_bad:
            print(f"     ... {len(report.bad_records) - args.show_bad} more bad records")
        if args.print_command:
            try:
                print(shlex.join(site.supernode_command()))
            except SiteConfigFileError as exc:
                print(f"clef preflight: {exc}", file=sys.stderr)
    if not report.ok:
        failed = ", ".join(c.name for c in report.checks if c.status == "fail")
        print(f"clef preflight: site not ready ({failed})", file=sys.stderr)
        return 1
    return 0
