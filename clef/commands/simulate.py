"""`clef simulate`: a federated CLEF pretraining run in Flower's simulation engine."""

from __future__ import annotations

import argparse
import signal
import sys

from clef.cli import add_config_arguments, experiment_from_args

NAME = "simulate"
HELP = ("simulate federated pretraining: synthesise or split a cohort into sites (or one folder per site), "
        "run Flower's simulation, probe, summarise; rerun on the same --out to resume")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)
    parser.add_argument("--out", metavar="DIR", default="runs/simulate",
                        help="run folder: metrics.jsonl, checkpoints, final_model.pt, summary.png (default %(default)s)")
    parser.add_argument("--sites", metavar="DIR", nargs="+",
                        help="one folder per site (MIMIC-IV-ECG layout or WFDB records); default: split a cohort")
    parser.add_argument("--quiet", action="store_true", help="do not echo the rounds while they run")


def _raise_keyboard_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace) -> int:
    exp = experiment_from_args(args)  # a bad value stops here, before the simulation starts
    from pathlib import Path

    from clef_core.federation.site_spec import SiteConfigError
    from simulations.engine import EngineError
    from simulations.partition import SplitError
    from simulations.run import SimulationError, simulate
    from simulations.run_lock import RunFolderBusy
    from simulations.site_folders import FederationSetupError, describe_sites

    # SIGTERM is handled as Ctrl-C: the finally blocks stop the SuperLink, simulation process and
    # Ray, status.json says "interrupted", and one line (no traceback) says how to resume
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    out = Path(args.out)
    echo = None if args.quiet else (lambda line: print(line, flush=True))
    try:
        result = simulate(exp, out, site_dirs=args.sites, echo=echo)
    except KeyboardInterrupt:
        from simulations.summary import read_rounds

        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the line short
        print(f"\nclef simulate: interrupted after round {len(read_rounds(out))}; run the same command "
              f"again to resume ({out})", file=sys.stderr)
        return 130
    except (SplitError, FederationSetupError, SiteConfigError, EngineError, FileNotFoundError,
            RunFolderBusy) as exc:
        print(f"clef simulate: {exc}", file=sys.stderr)
        return 1
    except SimulationError as exc:
        print(f"clef simulate: {exc}", file=sys.stderr)
        return 3
    print()
    for site in describe_sites(result.federation.manifest):
        counts = f" ({site['patients']} patients, {site['records']} records)" if "patients" in site else ""
        print(f"site {site['site']}: {site['data_dir']}{counts}")
    print()
    print(result.summary)
    print()
    if result.rounds and result.rounds[-1].get("probe_auroc") is not None:
        print(f"held-out linear-probe AUROC after round {result.rounds[-1]['round']}: "
              f"{result.rounds[-1]['probe_auroc']:.3f}")
    startup = "" if result.startup_seconds != result.startup_seconds else f", start-up {result.startup_seconds:.1f} s"
    print(f"{len(result.rounds)} rounds in {result.out} ({result.seconds:.1f} s this call{startup})")
    if result.status.get("stopped"):
        print(f"stopped early: {result.status['stopped']}")
    print(f"final model: {result.final_model}")
    if result.plot is not None:
        print(f"plot: {result.plot}")
    return 0
