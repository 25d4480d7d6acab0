"""The example third-party plugin in examples/ installs (make install does) and shows up."""

from __future__ import annotations

import json

import numpy as np

from ccsm_core.cli import cli
from ccsm_core.generator import GenerationSettings, make_sampler


def test_example_plugin_is_listed(cli_runner, monkeypatch):
    monkeypatch.setattr("ccsm_core.plugins._manager", None)
    res = cli_runner.invoke(cli, ["plugins", "--json"])
    recs = {r["name"]: r for r in json.loads(res.output)}
    rec = recs["ccsm_typical"]
    assert rec["status"] == "ok" and rec["builtin"] is False
    assert rec["registered"] == {"samplers": ["typical-p"]}
    assert rec["entry_point"] == "ccsm_typical = ccsm_typical.plugin"


def test_example_processor_in_a_chain(monkeypatch):
    monkeypatch.setattr("ccsm_core.plugins._manager", None)
    chain = make_sampler(GenerationSettings(temperature=1.0, topk=None, extra_processors=[("typical-p", {"p": 0.5})]))
    assert chain.names[-2:] == ["typical-p", "categorical"]
    logits = np.log(np.array([0.4, 0.3, 0.2, 0.1], np.float32))
    rng = np.random.default_rng(0)
    draws = {chain(np.zeros(0, np.int64), logits, rng) for _ in range(200)}
    assert draws < {0, 1, 2, 3}  # something was filtered out
