"""The Flower-free half of federated pretraining (no flwr imports here).

* :mod:`~clef_core.federation.run_config` -- Flower's flat run_config <-> the experiment;
* :mod:`~clef_core.federation.site_spec` -- who a site is, where its data lives (node config or a
  simulation's ``sites.json``), its own privacy policy, and its prepared data;
* :mod:`~clef_core.federation.contract` -- the metric keys a site's replies carry;
* :mod:`~clef_core.federation.local` -- a site's round as plain functions: train, private train,
  evaluate (weights in, weights and public metrics out).

``client/`` and ``server/`` only move these across Flower messages.
"""
