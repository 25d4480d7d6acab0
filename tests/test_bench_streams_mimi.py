"""``ccsm bench --streams``: the Mimi columns (each step's frames decoded batched and one by one)."""

from __future__ import annotations

import json

from ccsm_core.cli import cli


def test_streams_bench_times_mimi_batched_and_one_by_one(cli_runner):
    args = ["bench", "--streams", "2", "--shape", "demo", "--backend", "numpy", "--type", "f32"]
    res = cli_runner.invoke(cli, [*args, "--frames", "2", "--warmup", "1", "--json"])
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.stdout)
    assert row["mimi_batched"] is True
    assert row["mimi_step_s_median"] > 0 and row["mimi_one_by_one_s_median"] > 0
    res = cli_runner.invoke(cli, [*args, "--frames", "1", "--warmup", "0"])
    assert res.exit_code == 0, res.output
    assert "MIMI S/STEP" in res.output and "ONE BY ONE" in res.output
