"""Threads from the idle cores (`ccsm_cpu._load.IdleCores`): fewer threads while other processes
keep cores busy, all of them back when they stop."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest
from ccsm_cpu import _load

from ccsm_core.tensors import TensorData


class Machine:
    """A fake clock and CPU counters: ``run(seconds, ours=cores, others=cores)``."""

    def __init__(self) -> None:
        self.t, self.busy, self.own = 0.0, 0.0, 0.0

    def run(self, seconds: float, ours: float, others: float) -> None:
        self.t += seconds
        self.own += ours * seconds
        self.busy += (ours + others) * seconds

    def idle_cores(self, max_threads: int, cores: int = 2) -> _load.IdleCores:
        ic = _load.IdleCores(
            max_threads, interval=0.25, busy=lambda: self.busy, own=lambda: self.own, clock=lambda: self.t
        )
        ic.cores = cores
        return ic


def test_quiet_machine_keeps_every_thread():
    m = Machine()
    ic = m.idle_cores(2)
    for _ in range(10):
        m.run(0.3, ours=2.0, others=0.1)
        assert ic.threads() == 2


def test_one_busy_process_takes_a_thread_and_gives_it_back():
    m = Machine()
    ic = m.idle_cores(2)
    m.run(0.3, ours=1.3, others=0.7)  # two threads beside a busy process: it gets ~2/3 of a core
    assert ic.threads() == 1 and ic.others == pytest.approx(0.7)
    m.run(0.3, ours=1.0, others=1.0)  # one thread: the busy process has its core
    assert ic.threads() == 1
    m.run(0.3, ours=1.0, others=0.4)  # not free enough yet
    assert ic.threads() == 1
    m.run(0.3, ours=1.0, others=0.05)  # it stopped
    assert ic.threads() == 2


def test_never_below_one_thread_nor_above_the_request():
    m = Machine()
    ic = m.idle_cores(2)
    m.run(0.3, ours=0.5, others=4.0)
    assert ic.threads() == 1
    big = m.idle_cores(3, cores=8)
    m.run(0.3, ours=3.0, others=0.0)
    assert big.threads() == 3


def test_within_an_interval_nothing_is_measured():
    m = Machine()
    ic = m.idle_cores(2)
    m.run(0.1, ours=1.0, others=2.0)
    assert ic.threads() == 2  # 0.1 s < interval: the last decision stands
    m.run(0.2, ours=1.0, others=2.0)
    assert ic.threads() == 1


def test_unreadable_counters_keep_the_requested_count():
    ic = _load.IdleCores(2, busy=lambda: None)
    assert ic.threads() == 2


@pytest.mark.skipif(_load.read_busy_seconds() is None, reason="needs /proc/stat (Linux)")
def test_a_real_busy_process_is_seen():
    ic = _load.IdleCores(_load.usable_cores(), interval=0.4)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1.0)
        ic.threads()
    finally:
        busy.kill()
        busy.wait()
    assert ic.others >= 0.5  # the loop had a core to itself for most of the second


def test_backend_default_adapts_and_an_explicit_count_is_kept():
    from ccsm_cpu.backend import GgmlBackend

    auto, fixed = GgmlBackend(), GgmlBackend(threads=2)
    try:
        assert auto.idle_cores is not None and auto.threads == _load.usable_cores()
        assert fixed.idle_cores is None
        auto.idle_cores.threads = lambda: 1  # as if other processes held all cores but one
        x, w = np.ones((64, 1024), np.float32), TensorData("w", (1024, 1024), "F32", np.ones((1024, 1024), np.float32))
        for be in (auto, fixed):  # 64M multiply-adds: above min_parallel_work
            be.to_numpy(be.matmul(be.asarray(x), be.weight(w)))
        assert auto.stats()["threads"] == 1 and fixed.stats()["threads"] == 2
    finally:
        auto.close()
        fixed.close()
