"""`clef certs`: a trial CA, a SuperLink TLS certificate and SuperNode key pairs (deploy/certs.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

NAME = "certs"
HELP = "create a test CA, a server certificate and SuperNode key pairs for a local trial (not for production)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder for the files")
    parser.add_argument("--supernodes", type=int, default=2, metavar="N", help="SuperNode key pairs (default 2)")
    parser.add_argument("--host", action="append", default=[], metavar="NAME",
                        help="a host name or IP address the SuperLink is reached at (repeatable; "
                             "127.0.0.1 and localhost are always included)")
    parser.add_argument("--force", action="store_true", help="overwrite existing files in DIR")


def run(args: argparse.Namespace) -> int:
    from deploy.certs import DEFAULT_HOSTS, create_credentials

    if args.supernodes < 0:
        print(f"clef certs: --supernodes {args.supernodes}: expected >= 0", file=sys.stderr)
        return 2
    if (args.out / "ca.crt").exists() and not args.force:
        print(f"clef certs: {args.out / 'ca.crt'} exists (use --force to replace the credentials)", file=sys.stderr)
        return 2
    creds = create_credentials(args.out, args.supernodes, args.host or DEFAULT_HOSTS)
    print(f"CA certificate      {creds.ca_cert}   (give to every SuperNode and flwr CLI)")
    print(f"SuperLink TLS       {creds.server_cert} + {creds.server_key}")
    for i, key in enumerate(creds.node_keys):
        print(f"SuperNode {i + 1} key     {key}   (register {creds.node_public(i)})")
    print("trial credentials only: in production use the hospital's PKI (docs/deployment.md)")
    return 0
