"""``make fuzz``: many cases per target, each in a worker process watched for time (a hang),
memory (RSS above 1 GiB + 2x the case's input) and signals (a native crash). Failing inputs are
kept under ``OUT/<target>/`` for `replay`; a table sums up each target; the exit status is 1 when
anything failed.

    python -m ccsm_core.testing.fuzz --cases 10000 --jobs 2 --out build/fuzz
    python -m ccsm_core.testing.fuzz --replay build/fuzz/wav/traceback-1a2b3c4d-0
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import all_targets, get_target
from .execute import FAILURE_KINDS, Outcome, drive, execute, fuzz_environment, memory_limit
from .seeds import Seeds
from .target import Target

TIMEOUT_S = 30.0
CASES_PER_WORKER = 100  # a worker is replaced after this many cases: what one case leaves
# behind (caches, leaks) must not count against another's memory limit
KEEP_PER_FAILURE = 3  # inputs kept for each distinct failure
POLL_S = 0.02


def failure_dir(out: Path, target: str, outcome: Outcome, n: int) -> Path:
    digest = hashlib.sha1(outcome.key.encode()).hexdigest()[:8]
    return out / target / f"{outcome.kind}-{digest}-{n}"


def save_case(case_dir: Path, dest: Path, target: str, outcome: Outcome) -> None:
    """Keep a failing case (its files, links and arguments) with what happened."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    _copy_entries(case_dir, dest)
    info = {"target": target, **dataclasses.asdict(outcome)}
    (dest / "failure.json").write_text(json.dumps(info, indent=1))


def _copy_entries(source: Path, dest: Path) -> None:
    """Files, folders, links (as links) and FIFOs (made anew) of ``source`` into ``dest``."""
    for entry in source.iterdir():
        if entry.is_symlink():
            os.symlink(os.readlink(entry), dest / entry.name)
        elif entry.is_fifo():
            os.mkfifo(dest / entry.name)
        elif entry.is_dir():
            (dest / entry.name).mkdir()
            _copy_entries(entry, dest / entry.name)
        elif entry.is_file():
            shutil.copyfile(entry, dest / entry.name)


# --- the worker ---------------------------------------------------------------------------------


def worker(target: Target, out: Path, count: int, seed: int, wid: int, fd: int) -> None:
    """Run ``count`` cases of ``target`` and report each on file descriptor ``fd``."""
    pipe = os.fdopen(fd, "w", buffering=1)
    seeds = Seeds(out / "seeds")
    case_dir = out / "work" / f"{target.name}-{wid}" / "case"
    kept: Counter[str] = Counter()
    n = 0

    def on_case(case: Any) -> None:
        nonlocal n
        case.write(case_dir)  # whole before the parent may keep it
        pipe.write(json.dumps({"start": n, "size": case.size}) + "\n")
        outcome = execute(target, case, case_dir, written=True)
        if outcome.failed and kept[outcome.key] < KEEP_PER_FAILURE:
            save_case(
                case_dir, failure_dir(out, target.name, outcome, kept[outcome.key] + 100 * wid), target.name, outcome
            )
            kept[outcome.key] += 1
        pipe.write(json.dumps({"done": n, **dataclasses.asdict(outcome)}) + "\n")
        n += 1

    drive(target, seeds, count, on_case, seed=seed)
    pipe.close()


# --- the parent ---------------------------------------------------------------------------------


@dataclass
class Worker:
    wid: int
    count: int  # cases still to run
    seed: int
    proc: subprocess.Popen[bytes] | None = None
    pipe: Any = None
    buffer: bytes = b""
    started: float | None = None  # when the current case started
    size: int = 0
    rss: int = 0
    restarts: int = 0
    done: int = 0  # cases the current process finished


@dataclass
class Tally:
    """What one target's cases did."""

    cases: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    failures: dict[str, tuple[int, Outcome]] = field(default_factory=dict)  # key -> (count, first)
    peak_rss: int = 0
    slowest: float = 0.0

    def add(self, outcome: Outcome) -> None:
        self.cases += 1
        self.kinds[outcome.kind] += 1
        self.peak_rss = max(self.peak_rss, outcome.peak_rss)
        self.slowest = max(self.slowest, outcome.seconds)
        if outcome.failed:
            count, first = self.failures.get(outcome.key, (0, outcome))
            self.failures[outcome.key] = (count + 1, first)

    @property
    def failed(self) -> int:
        return sum(self.kinds[k] for k in FAILURE_KINDS)


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


class Run:
    """The workers of one target and the tally of their cases."""

    def __init__(self, target: Target, out: Path, cases: int, jobs: int, seed: int, timeout: float) -> None:
        self.target, self.out, self.timeout = target, out, timeout
        self.tally = Tally()
        self.kept: Counter[str] = Counter()
        per = [cases // jobs + (1 if i < cases % jobs else 0) for i in range(jobs)]
        self.workers = [Worker(i, n, seed * 1000 + i) for i, n in enumerate(per) if n]
        self.env = os.environ | fuzz_environment(out)

    def start(self, w: Worker) -> None:
        read, write = os.pipe()
        log = open(self.out / "work" / f"{self.target.name}-{w.wid}.log", "ab")  # noqa: SIM115
        cmd = [sys.executable, "-m", "ccsm_core.testing.fuzz.runner", "--worker", self.target.name]
        count = min(w.count, CASES_PER_WORKER)
        cmd += ["--out", str(self.out), "--cases", str(count), "--seed", str(w.seed), "--wid", str(w.wid)]
        cmd += ["--fd", str(write)]
        w.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            pass_fds=(write,),
            env=self.env,
            start_new_session=True,
        )
        log.close()
        os.close(write)
        w.pipe, w.buffer, w.started, w.done = os.fdopen(read, "rb", buffering=0), b"", None, 0

    def _lost(self, w: Worker, kind: str, detail: str) -> None:
        """The worker died in a case (crash) or was killed (hang, memory): count and keep it."""
        outcome = Outcome(kind, detail, "", self._log_tail(w), w.rss, 0, time.monotonic() - (w.started or 0), w.size)
        self.tally.add(outcome)
        if self.kept[outcome.key] < KEEP_PER_FAILURE:
            case_dir = self.out / "work" / f"{self.target.name}-{w.wid}" / "case"
            if case_dir.exists():
                save_case(
                    case_dir,
                    failure_dir(self.out, self.target.name, outcome, self.kept[outcome.key]),
                    self.target.name,
                    outcome,
                )
            self.kept[outcome.key] += 1
        w.count -= 1
        w.restarts += 1

    def _log_tail(self, w: Worker) -> str:
        try:
            return (self.out / "work" / f"{self.target.name}-{w.wid}.log").read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def _kill(self, w: Worker) -> None:
        assert w.proc is not None
        try:
            os.killpg(w.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        w.proc.wait()

    def _read(self, w: Worker) -> None:
        data = w.pipe.read(65536)
        if not data:
            return
        w.buffer += data
        while b"\n" in w.buffer:
            line, w.buffer = w.buffer.split(b"\n", 1)
            msg = json.loads(line)
            if "start" in msg:
                w.started, w.size, w.rss = time.monotonic(), msg["size"], 0
            else:
                msg.pop("done")
                self.tally.add(Outcome(**msg))
                w.count -= 1
                w.done += 1
                w.started = None

    def run(self, progress: bool = True) -> Tally:
        (self.out / "work").mkdir(parents=True, exist_ok=True)
        for w in self.workers:
            self.start(w)
        last_report = time.monotonic()
        while any(w.proc is not None for w in self.workers):
            live = [w for w in self.workers if w.proc is not None]
            ready, _, _ = select.select([w.pipe for w in live], [], [], POLL_S)
            for w in live:
                assert w.proc is not None
                if w.pipe in ready:
                    self._read(w)
                now = time.monotonic()
                if w.started is not None:
                    w.rss = max(w.rss, _rss(w.proc.pid))
                    if w.rss > memory_limit(w.size):
                        self._kill(w)
                        self._lost(
                            w, "memory", f"RSS reached {w.rss >> 20} MiB (limit {memory_limit(w.size) >> 20} MiB)"
                        )
                    elif now - w.started > self.timeout:
                        self._kill(w)
                        self._lost(w, "hang", f"no result after {self.timeout:.0f} s")
                if w.proc.poll() is not None:
                    self._read(w)
                    code = w.proc.returncode
                    if w.started is not None and w.proc.returncode is not None and code != -signal.SIGKILL:
                        name = signal.Signals(-code).name if code < 0 else f"exit status {code}"
                        self._lost(w, "crash", f"worker ended by {name}")
                    elif w.started is None and w.count > 0 and (code != 0 or not w.done):
                        w.count = 0  # the worker failed outside any case: see its log
                        print(
                            f"  worker {w.wid} of {self.target.name} failed: {self._log_tail(w)[-500:]}",
                            file=sys.stderr,
                        )
                    w.pipe.close()
                    w.proc, w.started = None, None
                    if w.count > 0 and w.restarts < 1000:
                        w.seed += 7919  # new cases, not the ones the last worker began with
                        self.start(w)
            if progress and time.monotonic() - last_report > 30:
                last_report = time.monotonic()
                print(f"  {self.target.name}: {self.tally.cases} cases, {self.tally.failed} failed", file=sys.stderr)
        return self.tally


# --- reporting ----------------------------------------------------------------------------------

COLUMNS = ("cases", "ok", "error", "traceback", "message", "output", "crash", "hang", "memory")


def table(tallies: dict[str, Tally]) -> str:
    head = ["target", *COLUMNS, "peak MiB", "slowest s"]
    rows = [head]
    for name, t in tallies.items():
        counts = [str(t.cases), *(str(t.kinds[c]) for c in COLUMNS[1:])]
        rows.append([name, *counts, str(t.peak_rss >> 20), f"{t.slowest:.1f}"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows
    )


def failures_text(out: Path, tallies: dict[str, Tally]) -> str:
    lines = []
    for name, t in tallies.items():
        for key, (count, first) in sorted(t.failures.items(), key=lambda kv: -kv[1][0]):
            kept = sorted((out / name).glob(f"{first.kind}-{hashlib.sha1(key.encode()).hexdigest()[:8]}-*"))
            lines.append(f"{name}: {count} x {first.kind}: {first.detail[:160]}")
            lines.append(f"    at {first.where or '(no ccsm frame)'}; input: {kept[0] if kept else '(not kept)'}")
    return "\n".join(lines)


def replay(folder: Path) -> int:
    """Run a kept failing case again, in this process, and show what it does now."""
    info = json.loads((folder / "failure.json").read_text())
    os.environ.update(fuzz_environment(folder.parent.parent))
    target = get_target(info["target"])
    from .case import Case, case_args

    work = folder.parent.parent / "work" / "replay"
    files = {
        str(p.relative_to(folder)): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and not p.is_symlink() and p.name not in ("failure.json", "args.json")
    }
    links = {p.name: Path(os.readlink(p)) for p in folder.iterdir() if p.is_symlink()}
    fifos = tuple(p.name for p in folder.iterdir() if p.is_fifo())
    case = Case(files, links, tuple(case_args(folder)), fifos)
    print(f"was: {info['kind']}: {info['detail']}")
    outcome = execute(target, case, work)
    print(f"now: {outcome.kind}: {outcome.detail}")
    if outcome.trace:
        print(outcome.trace)
    return 1 if outcome.failed else 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ccsm_core.testing.fuzz", description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=10_000, help="cases per target (default 10000)")
    p.add_argument("--targets", default="", help="comma-separated targets (default: all; see --list)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes per target (default 2)")
    p.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds one case may take (default 30)")
    p.add_argument("--seed", type=int, default=0, help="makes a run repeatable")
    p.add_argument("--out", type=Path, default=Path("build/fuzz"), help="seeds, work and failing inputs")
    p.add_argument("--list", action="store_true", help="list the targets")
    p.add_argument("--replay", type=Path, help="run one kept failing case again")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--wid", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--fd", type=int, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    out = a.out.resolve()
    if a.worker:
        worker(get_target(a.worker), out, a.cases, a.seed, a.wid, a.fd)
        return 0
    if a.replay:
        return replay(a.replay.resolve())
    targets = [t for t in all_targets() if not a.targets or t.name in a.targets.split(",")]
    if a.list or not targets:
        for t in all_targets():
            print(f"{t.name:18} {t.owner:6} {t.what}")
        return 0 if a.list else 2
    os.environ.update(fuzz_environment(out))
    seeds = Seeds(out / "seeds")
    for t in targets:  # the seed files, made once before the workers share them
        t.cases(seeds)
    tallies: dict[str, Tally] = {}
    start = time.monotonic()
    for t in targets:
        print(f"== {t.name} ({t.owner}): {t.what}", file=sys.stderr)
        tallies[t.name] = Run(t, out, a.cases, max(1, a.jobs), a.seed, a.timeout).run()
        (out / "summary.txt").write_text(f"{table(tallies)}\n\n{failures_text(out, tallies)}\n(so far)\n")
    short = [f"{name} ran {t.cases} of {a.cases} cases" for name, t in tallies.items() if t.cases < a.cases]
    report = f"{table(tallies)}\n\n{failures_text(out, tallies) or 'no failures'}\n"
    if short:  # a worker failed outside any case (its log is under OUT/work/)
        report += "incomplete: " + "; ".join(short) + "\n"
    print(report)
    total = sum(t.cases for t in tallies.values())
    print(f"{total} cases in {time.monotonic() - start:.0f} s; inputs of failures under {out}")
    (out / "summary.txt").write_text(report)
    (out / "summary.json").write_text(
        json.dumps(
            {
                name: {
                    "cases": t.cases,
                    "kinds": dict(t.kinds),
                    "peak_rss": t.peak_rss,
                    "failures": [{"count": c, **dataclasses.asdict(o)} for c, o in t.failures.values()],
                }
                for name, t in tallies.items()
            },
            indent=1,
        )
    )
    return 1 if short or any(t.failed for t in tallies.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
