"""Batched generation (`ccsm_core.batching`, `speak_many`, ``ccsm run --batch-file``) on the
tiny fixture model: every utterance equals the one generated alone. The per-op exactness on
each backend is in `ccsm_core.testing.conformance` (`test_tiny_csm_batch_is_each_stream_alone`)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from ccsm_core.backends.numpy_backend import NumpyBackend
from ccsm_core.batching import FrameBatch
from ccsm_core.cli import cli
from ccsm_core.errors import GenerationError, UsageError
from ccsm_core.generator import GenerationSettings, Generator
from ccsm_core.loading.csm import load_csm
from ccsm_core.pipeline import Finished, Line
from ccsm_core.speak_many import Failed, speak_many
from ccsm_core.speech import load_speech

from .test_csm_parity import FIXTURE

MODEL = ["--model", str(FIXTURE), "--backend", "numpy", "--no-watermark"]


def test_batch_file_lines_equal_each_line_run_alone(cli_runner, tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("Hello there.\n\n# a comment\nA second line. With two sentences.\nThird.\n")
    args = [*MODEL, "--seed", "3", "--max-audio-ms", "480", "--temperature", "0.9"]
    res = cli_runner.invoke(
        cli,
        [
            "run",
            "--batch-file",
            str(lines),
            *args,
            "-o",
            str(tmp_path / "b-{n}.wav"),
            "--codes-out",
            str(tmp_path / "b-{n}.npy"),
            "--batch",
            "2",
            "--json",
        ],
    )
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in tmp_path.glob("b-*")) == [
        "b-1.npy",
        "b-1.wav",
        "b-4.npy",
        "b-4.wav",
        "b-5.npy",
        "b-5.wav",
    ]
    assert len(res.stdout.strip().splitlines()) == 3  # one JSON summary per line
    for n, text in ((1, "Hello there."), (4, "A second line. With two sentences."), (5, "Third.")):
        alone = tmp_path / f"alone-{n}"
        res = cli_runner.invoke(cli, ["run", text, *args, "-o", f"{alone}.wav", "--codes-out", f"{alone}.npy"])
        assert res.exit_code == 0, res.output
        np.testing.assert_array_equal(np.load(tmp_path / f"b-{n}.npy"), np.load(f"{alone}.npy"))
        np.testing.assert_array_equal(sf.read(tmp_path / f"b-{n}.wav")[0], sf.read(f"{alone}.wav")[0])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["-o", "same.wav"], "needs {n} in -o"),
        (["--srt", "subs.srt"], "needs {n} in --srt"),
        (["--stream"], "one file per line"),
        (["Some text"], "--batch-file and TEXT"),
    ],
)
def test_batch_file_usage_errors(cli_runner, tmp_path, extra, message):
    lines = tmp_path / "lines.txt"
    lines.write_text("One.\n")
    res = cli_runner.invoke(cli, ["run", "--batch-file", str(lines), *MODEL, *extra])
    assert res.exit_code == 2 and message in res.output, res.output
    lines.write_text("\n# nothing\n")
    res = cli_runner.invoke(cli, ["run", "--batch-file", str(lines), *MODEL])
    assert res.exit_code == 2 and "has no lines to speak" in res.output


def test_a_failing_job_does_not_stop_the_others():
    sp = load_speech(str(FIXTURE), "numpy")
    jobs = [[Line("Fine.", None, None)], [Line("A bad speaker.", -1, None)], [Line("Also fine.", None, None)]]
    settings = GenerationSettings(max_audio_ms=320, seed=1)
    out: dict[int, list] = {0: [], 1: [], 2: []}
    for i, ev in speak_many(sp, jobs, slots=2, settings=settings):
        out[i].append(ev)
    assert isinstance(out[1][-1], Failed) and isinstance(out[1][-1].error, (GenerationError, UsageError))
    for i in (0, 2):
        assert isinstance(out[i][-1], Finished) and len(out[i][-1].frames) == 4


def test_closing_a_stream_frees_its_slot_and_the_others_are_unchanged():
    lm = load_csm(FIXTURE, "numpy")
    s = [GenerationSettings(max_audio_ms=800, temperature=0.9, topk=50, seed=i) for i in range(3)]
    alone = [Generator(lm.model, lm.tokenizer).generate(f"Text {i}.", 0, (), s[i]) for i in range(3)]
    batch = FrameBatch(lm.model, slots=3)
    its = []
    for i in range(3):
        gen = Generator(lm.model, lm.tokenizer)
        gen.batch = batch
        its.append(gen.frames(f"Text {i}.", 0, (), s[i]))
    got = [[next(it)] for it in its]
    assert batch.active == 3
    its[1].close()  # slot 1 freed: the stream in slot 2 moves into it
    assert batch.active == 2
    for i in (0, 2):
        got[i] += list(its[i])
        np.testing.assert_array_equal(np.stack(got[i]), alone[i])
    assert batch.active == 0


class _NoRows:
    """The NumPy backend without ``matmul_rows``: a backend that cannot batch."""

    def __init__(self) -> None:
        self._be = NumpyBackend()
        self.name = "numpy-no-rows"

    def __getattr__(self, name):
        if name == "matmul_rows":
            raise AttributeError(name)
        return getattr(self._be, name)


def test_backend_without_matmul_rows_computes_streams_one_after_another():
    lm = load_csm(FIXTURE, _NoRows())
    batch = FrameBatch(lm.model, slots=2)
    assert not batch.batched
    s = [GenerationSettings(max_audio_ms=480, temperature=0.9, topk=50, seed=i) for i in range(2)]
    gens = [Generator(lm.model, lm.tokenizer) for _ in range(2)]
    alone = [g.generate("Hi there.", i, (), s[i]) for i, g in enumerate(gens)]
    for g in gens:
        g.batch = batch
    its = [g.frames("Hi there.", i, (), s[i]) for i, g in enumerate(gens)]
    got: list[list[np.ndarray]] = [[], []]
    for _ in range(len(alone[0])):
        for i in range(2):
            got[i].append(next(its[i]))
    for i in range(2):
        np.testing.assert_array_equal(np.stack(got[i]), alone[i])


def test_batch_size_is_validated():
    lm = load_csm(FIXTURE, "numpy")
    for bad in (0, 65, True, 2.0):
        with pytest.raises(UsageError, match="batch size"):
            FrameBatch(lm.model, slots=bad)
