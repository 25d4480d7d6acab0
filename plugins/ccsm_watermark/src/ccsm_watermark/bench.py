"""Robustness benchmark: ``python -m ccsm_watermark.bench [--out DIR] [--methods a,b]``.

Material: eight 10-second speech clips at 24 kHz made with espeak-ng (several voices) and one
synthesised music clip. Attacks: MP3 64k/128k, Opus 32k (ffmpeg), resampling to 16 kHz and
back, white noise at 20/10 dB SNR, 4 kHz low-pass, -6 dB and +6 dB gain (clipped), 10 % cut
at the start, tempo 0.95 (ffmpeg atempo) and a 100 ms echo. Per attack and method it prints
bit accuracy, exact payload rate, detection rate at p < 1e-6 and false positives of the
same attacks on unmarked audio (tried with several keys); quality is SNR and wideband PESQ
(``pesq`` package). Needs ``ffmpeg`` and ``espeak-ng`` on PATH (Debian: apt-get install
ffmpeg espeak-ng) and ``pip install pesq``. Not a test: it takes minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np

SR = 24000
CLIP_S = 10.0
PAYLOAD = 0xC0FFEE42
THRESHOLD = 1e-6

TEXTS = [
    "The quick brown fox jumps over the lazy dog while the farmer watches from the gate. "
    "Later that evening, the rain began to fall softly on the old tin roof of the barn.",
    "Please remember to bring your passport, your tickets and a warm coat, because the train "
    "leaves at seven in the morning and the mountains are cold this time of year.",
    "Scientists announced today that the new telescope has captured detailed images of a "
    "distant galaxy, revealing thousands of stars that had never been observed before.",
    "I am not sure what you mean by that, but if you want to talk about it tomorrow, we can "
    "meet for coffee near the library at around ten o'clock.",
    "Welcome to the weather report. Expect clouds in the north, sunshine in the south, and "
    "strong winds along the coast, with temperatures dropping sharply overnight.",
    "She opened the letter slowly, read the first line twice, and then sat down by the window, "
    "smiling for the first time in many weeks as the sun went down.",
    "To reset your device, hold the power button for ten seconds, wait until the light turns "
    "blue, and then follow the instructions on the screen carefully.",
    "History teaches us that great changes often begin with small steps, taken by ordinary "
    "people who simply refuse to accept that things cannot be different.",
]
VOICES = ["en-us", "en-gb", "en-us+f3", "en-gb-scotland", "en-029+f2", "en-gb-x-rp+m3", "en-us+f4", "en-gb+m5"]


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _read(path: str) -> tuple[np.ndarray, int]:
    import soundfile as sf

    x, sr = sf.read(path, dtype="float32", always_2d=False)
    return x, sr


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    return x[:n] if len(x) >= n else np.pad(x, (0, n - len(x)))


def speech_clip(i: int, work: str) -> np.ndarray:
    """10 s of espeak-ng speech at 24 kHz, peak at -1 dBFS."""
    raw = os.path.join(work, f"speech{i}_raw.wav")
    out = os.path.join(work, f"speech{i}.wav")
    _run(["espeak-ng", "-v", VOICES[i], "-s", "165", "-w", raw, TEXTS[i]])
    _run(["ffmpeg", "-y", "-i", raw, "-ar", str(SR), "-ac", "1", out])
    x, _ = _read(out)
    x = _fit(x, int(SR * CLIP_S))
    return (x / (np.abs(x).max() + 1e-9) * 10 ** (-1 / 20)).astype(np.float32)


def music_clip(seed: int = 3) -> np.ndarray:
    """10 s of synthesised music: chords of decaying harmonic notes, bass and hi-hats."""
    rng = np.random.default_rng(seed)
    n = int(SR * CLIP_S)
    t = np.arange(n) / SR
    y = np.zeros(n)
    beat = 0.5
    roots = [220.0, 174.61, 261.63, 196.0]
    for b in range(int(CLIP_S / beat)):
        start = int(b * beat * SR)
        seg = np.arange(n - start) / SR
        env = np.exp(-seg * 3.0)
        root = roots[(b // 4) % 4]
        for ratio in (1.0, 1.26, 1.5, 2.0):
            f = root * ratio * (1 + rng.normal(0, 0.001))
            for h in range(1, 6):
                y[start:] += env * np.sin(2 * np.pi * f * h * seg) * 0.12 / h
        y[start:] += np.exp(-seg * 8) * np.sin(2 * np.pi * root / 2 * seg) * 0.3  # bass
        hat = int(0.25 * beat * SR)
        for k in range(2):
            s = start + k * 2 * hat
            m = min(hat, n - s)
            if m > 0:
                y[s : s + m] += rng.normal(0, 0.05, m) * np.exp(-np.arange(m) / SR * 40)
    y += 0.02 * np.sin(2 * np.pi * 0.5 * t) * np.sin(2 * np.pi * 880 * t)
    return (y / np.abs(y).max() * 10 ** (-1 / 20)).astype(np.float32)


# -- attacks ---------------------------------------------------------------------------------
def _ffmpeg_roundtrip(x: np.ndarray, args: list[str], ext: str, work: str) -> np.ndarray:
    import soundfile as sf

    src, mid, dst = (os.path.join(work, f"atk_{i}.{e}") for i, e in enumerate(("wav", ext, "wav")))
    sf.write(src, x, SR, subtype="FLOAT")
    _run(["ffmpeg", "-y", "-i", src, *args, mid])
    _run(["ffmpeg", "-y", "-i", mid, "-ar", str(SR), "-ac", "1", "-c:a", "pcm_f32le", dst])
    y, _ = _read(dst)
    return y.astype(np.float32)


def _noise(x: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    p = np.mean(x.astype(np.float64) ** 2)
    return (x + rng.normal(0, np.sqrt(p / 10 ** (snr_db / 10)), len(x))).astype(np.float32)


def _lowpass(x: np.ndarray, cutoff: float) -> np.ndarray:
    spec = np.fft.rfft(x)
    spec[np.fft.rfftfreq(len(x), 1 / SR) > cutoff] = 0
    return np.fft.irfft(spec, n=len(x)).astype(np.float32)


def _resample(x: np.ndarray, mid: int) -> np.ndarray:
    import soxr

    return soxr.resample(soxr.resample(x, SR, mid), mid, SR).astype(np.float32)


def _echo(x: np.ndarray, delay_s: float, gain: float) -> np.ndarray:
    d = int(delay_s * SR)
    y = x.astype(np.float64).copy()
    y[d:] += gain * x[:-d]
    return (y / max(1.0, np.abs(y).max())).astype(np.float32)


def attacks(work: str, seed: int = 0) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {
        "none": lambda x: x,
        "mp3 64k": lambda x: _ffmpeg_roundtrip(x, ["-c:a", "libmp3lame", "-b:a", "64k"], "mp3", work),
        "mp3 128k": lambda x: _ffmpeg_roundtrip(x, ["-c:a", "libmp3lame", "-b:a", "128k"], "mp3", work),
        "opus 32k": lambda x: _ffmpeg_roundtrip(x, ["-c:a", "libopus", "-b:a", "32k"], "opus", work),
        "resample 16k": lambda x: _resample(x, 16000),
        "noise 20dB": lambda x: _noise(x, 20, rng),
        "noise 10dB": lambda x: _noise(x, 10, rng),
        "lowpass 4k": lambda x: _lowpass(x, 4000),
        "gain -6dB": lambda x: (x * 0.5).astype(np.float32),
        "gain +6dB clip": lambda x: np.clip(x * 2.0, -1, 1).astype(np.float32),
        "cut 10% start": lambda x: x[len(x) // 10 :],
        "tempo 0.95": lambda x: _ffmpeg_roundtrip(x, ["-filter:a", "atempo=0.95"], "wav", work),
        "echo 100ms": lambda x: _echo(x, 0.1, 0.5),
    }


# -- quality ---------------------------------------------------------------------------------
def quality(ref: np.ndarray, deg: np.ndarray) -> tuple[float, float]:
    """(SNR dB, wideband PESQ) of ``deg`` against ``ref`` (both 24 kHz mono)."""
    import soxr
    from pesq import pesq

    snr = 10 * np.log10(np.sum(ref.astype(np.float64) ** 2) / np.sum((deg - ref).astype(np.float64) ** 2))
    r16, d16 = soxr.resample(ref, SR, 16000), soxr.resample(deg, SR, 16000)
    return float(snr), float(pesq(16000, r16, d16, "wb"))


def material(work: str) -> list[tuple[str, np.ndarray]]:
    clips = [(f"speech{i} ({VOICES[i]})", speech_clip(i, work)) for i in range(len(TEXTS))]
    clips.append(("music (synth)", music_clip()))
    return clips


def run(methods: list[str], work: str, n_fp_keys: int = 3, log: Callable[[str], None] = print) -> dict:
    from . import create

    clips = material(work)
    atk = attacks(work)
    results: dict = {}
    for name in methods:
        wm = create(name, b"benchmark key " + name.encode())
        wrong = [create(name, os.urandom(32)) for _ in range(n_fp_keys)]
        rows: dict = {
            a: {"bits": [], "exact": [], "det": [], "fp": 0, "fp_n": 0, "music_exact": None, "music_det": None}
            for a in atk
        }
        qual = []
        t0 = time.time()
        for label, clip in clips:
            speech = label.startswith("speech")
            marked = wm.embed(clip, SR, PAYLOAD)
            snr, pq = quality(clip, marked)
            qual.append((label, snr, pq))
            for a, f in atk.items():
                y = f(marked)
                r = wm.detect(y, SR)
                raw = r.payload if r.payload is not None else r.raw_payload
                bits = 0.5 if raw is None else 1 - bin(raw ^ PAYLOAD).count("1") / 32
                exact = r.payload == PAYLOAD
                det = bool(r.present)
                if speech:
                    rows[a]["bits"].append(bits)
                    rows[a]["exact"].append(exact)
                    rows[a]["det"].append(det)
                else:
                    rows[a]["music_exact"], rows[a]["music_det"] = exact, det
                u = f(clip)  # the same attack on unmarked audio, with the right and other keys
                for d in [wm, *wrong]:
                    ru = d.detect(u, SR)
                    rows[a]["fp"] += int(bool(ru.present))
                    rows[a]["fp_n"] += 1
            log(f"{name}: {label}: SNR {snr:.1f} dB, PESQ {pq:.2f} ({time.time() - t0:.0f} s)")
        results[name] = {"rows": rows, "quality": qual}
    return results


def table(results: dict) -> str:
    lines = []
    for name, res in results.items():
        q = res["quality"]
        sp = [r for r in q if r[0].startswith("speech")]
        lines.append(
            f"\n**{name}** - speech: SNR {np.mean([r[1] for r in sp]):.1f} dB, "
            f"PESQ mean {np.mean([r[2] for r in sp]):.2f} (min {min(r[2] for r in sp):.2f}); "
            + "; ".join(f"{r[0]}: SNR {r[1]:.1f} dB, PESQ {r[2]:.2f}" for r in q if not r[0].startswith("speech"))
            + "\n"
        )
        lines.append(
            "| attack | bit acc. (speech, raw decode) | payload exact (speech) | detected p<1e-6 (speech) "
            "| music: payload / detected | false positives (unmarked) |"
        )
        lines.append("|---|---|---|---|---|---|")
        for a, r in res["rows"].items():
            n = len(r["exact"])
            lines.append(
                f"| {a} | {100 * np.mean(r['bits']):.1f} % | {sum(r['exact'])}/{n} | {sum(r['det'])}/{n} "
                f"| {'yes' if r['music_exact'] else 'no'} / {'yes' if r['music_det'] else 'no'} "
                f"| {r['fp']}/{r['fp_n']} |"
            )
        tot = sum(r["fp_n"] for r in res["rows"].values())
        fps = sum(r["fp"] for r in res["rows"].values())
        lines.append(f"\nFalse positives over all unmarked trials: {fps}/{tot}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from . import METHODS

    ap = argparse.ArgumentParser(prog="python -m ccsm_watermark.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=",".join(METHODS), help="comma list (default: all)")
    ap.add_argument("--work", default=None, help="folder for the material (default: a temporary one)")
    ap.add_argument("--fp-keys", type=int, default=3, help="random wrong keys per unmarked trial")
    ap.add_argument("--json", default=None, help="also write the raw results here")
    args = ap.parse_args(argv)
    for tool in ("ffmpeg", "espeak-ng"):
        if shutil.which(tool) is None:
            print(f"error: {tool} not found (apt-get install -y ffmpeg espeak-ng)", file=sys.stderr)
            return 2
    work = args.work or tempfile.mkdtemp(prefix="ccsm-wm-bench-")
    os.makedirs(work, exist_ok=True)
    res = run(
        [m.strip() for m in args.methods.split(",") if m.strip()],
        work,
        args.fp_keys,
        log=lambda s: print(s, file=sys.stderr, flush=True),
    )
    print(table(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
