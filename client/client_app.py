"""The hospital's Flower ClientApp (``clientapp`` component in pyproject.toml).

Thin, like Flower's examples: it turns a Message into the plain functions of
:mod:`clef_core.federation.local` and their results back into a reply.

* ``train``: the round's global weights and config -> :func:`~clef_core.federation.local.site_train`
  -> exactly one ArrayRecord (the new weights) and one MetricRecord of fixed numeric keys
  (:mod:`clef_core.federation.contract`).
* ``evaluate``: the CLEF loss of the global weights on a few local batches; refused under DP.

Who the site is, its folders and its privacy policy come from the node config (deployment) or
its sites.json entry (simulation), never from the run (:mod:`clef_core.federation.site_spec`). The
run's ``[privacy]`` is only a request: a weaker one is refused before any data is read.

What crosses to the server is only weights and those aggregate numbers. Record names, patient
ids, paths and error text stay in the site's log (``<work-dir>/site.log``). Flower forwards an
exception's text to the server as the error reply's reason, so the ClientApp raises only
:class:`SiteRefusal` (whose text names the refusal and nothing else) or :class:`SiteFailure`
(a fixed text: not even the exception type, which under DP would be a data-dependent signal).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from clef_core.experiment import Experiment
from clef_core.federation.local import local_evaluate, site_train
from clef_core.federation.run_config import experiment_config, requested_keys, run_dir, sites_manifest_path
from clef_core.federation.site_spec import SiteSpec, resolve_site, site_log
from clef_core.privacy.policy import PrivacyRefusal

# experiment keys that only a site may set: a run that names them is refused
SITE_OWNED_KEYS = ("privacy.ledger_dir", "privacy.budget_scope")

app = ClientApp()


class SiteFailure(RuntimeError):
    """A site could not do its part this round; the details are in the site's own log only."""


class SiteRefusal(RuntimeError):
    """A site refused the run's request (e.g. weaker privacy than its policy); the text names
    only the refusal."""


def _limit_threads(context: Context) -> None:
    # a simulated client gets one CPU from Ray: one torch thread, or the sites fight for cores
    if "partition-id" in context.node_config:
        torch.set_num_threads(1)
        os.environ.setdefault("OMP_NUM_THREADS", "1")


def _refuse_site_owned(run_config: Mapping[str, Any], node_config: Mapping[str, Any]) -> None:
    named = sorted(requested_keys(run_config) & set(SITE_OWNED_KEYS))
    if named:
        raise PrivacyRefusal("refused by the site: the run sets a privacy setting that only the site may set",
                             f"run_config names {named}")
    experiment = str(run_config.get("experiment", ""))
    if "data-dir" in node_config and experiment and not _shipped_config(experiment):
        # a path would make the site read (and report on) any TOML file on its disk
        raise PrivacyRefusal("refused by the site: the run's experiment is not a shipped config name",
                             f"run_config experiment = {experiment!r}; a deployed site reads only configs/<name>.toml "
                             f"of its installed clef-fl (send the rest as `set` overrides)")


def _site_run_config(context: Context) -> dict[str, Any]:
    """The run_config, with a deployed site's experiment name as the path of its shipped file (not
    a file of that name in the SuperNode's working folder)."""
    run_config = dict(context.run_config)
    name = str(run_config.get("experiment", ""))
    if "data-dir" in context.node_config and name:
        from clef_core.config import configs_dir

        run_config["experiment"] = str(configs_dir() / f"{name.removesuffix('.toml')}.toml")
    return run_config


def _shipped_config(name: str) -> bool:
    from clef_core.config import SITE_TEMPLATE, config_names

    return name.removesuffix(".toml") in set(config_names()) - {SITE_TEMPLATE} and "/" not in name and "\\" not in name


Work = Callable[[Experiment, SiteSpec, logging.Logger], Message]


def guarded(stage: str, msg: Message, context: Context, work: Work) -> Message:
    """Resolve the site and the run's experiment, run ``work(exp, spec, log)``; a refusal or a
    failure is logged in full on the site and raised with a text that reveals nothing else."""
    _limit_threads(context)
    spec = None
    try:
        spec = resolve_site(context.node_config, sites_manifest_path(context.run_config))
        log = site_log(spec)
        log.info("%s round %s: start", stage, msg.content["config"].get("server-round", "?"))
        _refuse_site_owned(context.run_config, context.node_config)
        reply = work(experiment_config(_site_run_config(context)), spec, log)
        log.info("%s: done %s", stage, dict(next(iter(reply.content.metric_records.values()))))
        return reply
    except PrivacyRefusal as exc:
        _log_failure(spec, stage, exc)
        raise SiteRefusal(exc.public) from None
    except Exception as exc:
        _log_failure(spec, stage, exc)
        raise SiteFailure(f"site {stage} failed; details are in the site's own log") from None


def _log_failure(spec: SiteSpec | None, stage: str, exc: Exception) -> None:
    try:
        if spec is None:
            raise OSError("no site resolved")
        site_log(spec).error("%s refused or failed", stage, exc_info=exc)
    except Exception:  # no writable site log: the SuperNode's own console is still the site's
        logging.getLogger("clef.site").error("%s refused or failed", stage, exc_info=exc)


def _train(msg: Message, context: Context, exp: Experiment, spec: SiteSpec, log: logging.Logger) -> Message:
    conf = dict(msg.content["config"])
    weights, metrics = site_train(msg.content["arrays"].to_torch_state_dict(), conf, exp, spec, log,
                                  run_dir=str(run_dir(context.run_config)))
    content = RecordDict({"arrays": ArrayRecord(weights), "metrics": MetricRecord(metrics)})
    return Message(content, reply_to=msg)


def _evaluate(msg: Message, exp: Experiment, spec: SiteSpec, log: logging.Logger) -> Message:
    metrics = local_evaluate(msg.content["arrays"].to_torch_state_dict(), dict(msg.content["config"]), exp, spec, log)
    return Message(RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    return guarded("train", msg, context, lambda exp, spec, log: _train(msg, context, exp, spec, log))


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return guarded("evaluate", msg, context, lambda exp, spec, log: _evaluate(msg, exp, spec, log))
