"""Robustness benchmark per kind of material: ``python -m ccsm_watermark.bench [--quick]``.

Material (10-s clips at 24 kHz, peak -1 dBFS): espeak-ng speech (eight voices), synthesised
music (`synth.music`: pop, piano and synth styles), speech over music (the espeak-ng speech
with synthesised music 10 dB under it) and noise textures (`synth.noise`). Every clip is
marked with payload 0xC0FFEE42 and attacked: MP3 64k/128k and Opus 32k (ffmpeg), resampling
to 16 kHz and back, white noise at 20/10 dB SNR, 4 kHz low-pass, -6/+6 dB gain (clipped), the
first 10 % cut, tempo 0.95 (ffmpeg atempo), a 100 ms echo and a room reverb. Reported per
kind: exact payloads per attack, detections, wrong payloads, quality (SNR; wideband PESQ on
speech, and on speech over music both of the mix and of the speech alone plus the mark's
change), false positives and wrong payloads over unmarked or wrongly keyed trials, and
embedding/detection speed as x real time. Needs ``ffmpeg`` and ``espeak-ng`` on PATH and
the ``pesq`` package (``pip install -e "plugins/ccsm_watermark[bench]"``). Not a test.
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
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from . import synth

SR = 24000
CLIP_S = 10.0
PAYLOAD = 0xC0FFEE42
KINDS = ("speech", "music", "speech+music", "noise")
MUSIC_UNDER_DB = 10.0  # speech over music: the music this far (RMS) under the speech
PESQ_KINDS = ("speech", "speech+music")

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
QUICK_ATTACKS = ("none", "mp3 64k", "noise 20dB", "tempo 0.95")


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _read(path: str) -> np.ndarray:
    import soundfile as sf

    x, _ = sf.read(path, dtype="float32", always_2d=False)
    return x


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    return x[:n] if len(x) >= n else np.pad(x, (0, n - len(x)))


def _peak(x: np.ndarray) -> np.ndarray:
    return (x / (np.abs(x).max() + 1e-9) * 10 ** (-1 / 20)).astype(np.float32)


# -- material --------------------------------------------------------------------------------
def speech_clip(i: int, work: str, seconds: float = CLIP_S) -> np.ndarray:
    """``seconds`` of espeak-ng speech (voice and text ``i``) at 24 kHz, peak -1 dBFS."""
    raw = os.path.join(work, f"speech{i}_{os.getpid()}_raw.wav")
    out = os.path.join(work, f"speech{i}_{os.getpid()}.wav")
    i %= len(VOICES)
    _run(["espeak-ng", "-v", VOICES[i], "-s", "165", "-w", raw, TEXTS[i]])
    _run(["ffmpeg", "-y", "-i", raw, "-ar", str(SR), "-ac", "1", out])
    return _peak(_fit(_read(out), int(SR * seconds)))


def clips(kind: str, count: int, work: str, seconds: float = CLIP_S) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    """``count`` clips of ``kind``: (label, clip, the speech alone for speech over music)."""
    out: list[tuple[str, np.ndarray, np.ndarray | None]] = []
    for i in range(count):
        if kind == "speech":
            out.append((f"{VOICES[i % 8]}", speech_clip(i, work, seconds), None))
        elif kind == "music":
            style = ("pop", "piano", "synth")[i % 3]
            out.append((f"music {style} {i}", synth.music(seconds, SR, seed=i, style=style), None))
        elif kind == "speech+music":
            sp = speech_clip(i, work, seconds)
            bed = synth.music(seconds, SR, seed=100 + i, style=("pop", "piano", "synth")[i % 3])
            mixed = synth.mix(sp, bed, MUSIC_UNDER_DB)
            # the speech as it sits in the mix (synth.mix scales speech and music by one peak gain)
            f, b = sp.astype(np.float64), bed.astype(np.float64)
            raw = f + np.sqrt(np.mean(f**2) / max(np.mean(b**2), 1e-20)) * 10 ** (-MUSIC_UNDER_DB / 20) * b
            inner = f * 10 ** (-1 / 20) / (np.abs(raw).max() + 1e-12)
            out.append((f"{VOICES[i % 8]} over music", mixed, inner.astype(np.float32)))
        elif kind == "noise":
            out.append((f"noise {i}", synth.noise(seconds, SR, seed=i), None))
        else:
            raise ValueError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")
    return out


# -- attacks ---------------------------------------------------------------------------------
def _ffmpeg_roundtrip(x: np.ndarray, args: list[str], ext: str, work: str) -> np.ndarray:
    import soundfile as sf

    tag = f"{os.getpid()}_{time.monotonic_ns()}"
    src, mid, dst = (os.path.join(work, f"atk_{tag}_{i}.{e}") for i, e in enumerate(("wav", ext, "wav")))
    sf.write(src, x, SR, subtype="FLOAT")
    try:
        _run(["ffmpeg", "-y", "-i", src, *args, mid])
        _run(["ffmpeg", "-y", "-i", mid, "-ar", str(SR), "-ac", "1", "-c:a", "pcm_f32le", dst])
        return _read(dst).astype(np.float32)
    finally:
        for f in (src, mid, dst):
            if os.path.exists(f):
                os.remove(f)


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


def _reverb(x: np.ndarray) -> np.ndarray:
    y = synth.reverb(x.astype(np.float64), SR, rt60=0.5, wet=0.3, rng=np.random.default_rng(5))
    return (y / max(1.0, np.abs(y).max())).astype(np.float32)


def attacks(work: str, seed: int = 0) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Every attack by name: a function from a 24 kHz clip to the attacked clip."""
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
        "reverb": _reverb,
    }


# -- quality ---------------------------------------------------------------------------------
def snr_db(ref: np.ndarray, deg: np.ndarray) -> float:
    """SNR of ``deg`` against ``ref`` in dB."""
    r = ref.astype(np.float64)
    return float(10 * np.log10(np.sum(r**2) / max(np.sum((deg - r) ** 2), 1e-30)))


SPECTRAL_BANDS = ((0, 500), (500, 1000), (1000, 2000), (2000, 4000), (4000, 7000), (7000, 12000))


def spectral_change(ref: np.ndarray, deg: np.ndarray) -> list[float]:
    """Where the change sits: per band of `SPECTRAL_BANDS`, the energy of ``deg - ref`` relative
    to the energy of ``ref`` in that band, in dB (over the whole clip)."""
    f = np.fft.rfftfreq(len(ref), 1 / SR)
    r = np.abs(np.fft.rfft(ref.astype(np.float64))) ** 2
    d = np.abs(np.fft.rfft(deg.astype(np.float64) - ref)) ** 2
    out = []
    for lo, hi in SPECTRAL_BANDS:
        sel = (f >= lo) & (f < hi)
        out.append(float(10 * np.log10(max(d[sel].sum(), 1e-30) / max(r[sel].sum(), 1e-30))))
    return out


def pesq_wb(ref: np.ndarray, deg: np.ndarray) -> float:
    """Wideband PESQ of ``deg`` against ``ref`` (24 kHz mono, resampled to 16 kHz)."""
    import soxr
    from pesq import pesq

    return float(pesq(16000, soxr.resample(ref, SR, 16000), soxr.resample(deg, SR, 16000), "wb"))


# -- one kind --------------------------------------------------------------------------------
def run_kind(
    method: str, kind: str, count: int, work: str, attack_names: list[str], fp_keys: int, seconds: float
) -> dict:
    """Embed, attack and detect every clip of ``kind``; the raw counts (see `table`)."""
    from . import create

    wm = create(method, b"benchmark key " + method.encode())
    rng = np.random.default_rng(zlib.crc32(f"{method} {kind}".encode()))
    atk = {a: f for a, f in attacks(work, seed=KINDS.index(kind)).items() if a in attack_names}
    rows = {a: {"exact": 0, "det": 0, "wrong": 0, "n": 0} for a in atk}
    fp = {"trials": 0, "present": 0, "payloads": 0, "min_p": 1.0}
    qual: list[dict] = []
    for label, clip, speech in clips(kind, count, work, seconds):
        marked = wm.embed(clip, SR, PAYLOAD)
        q: dict = {"clip": label, "snr": snr_db(clip, marked), "bands": spectral_change(clip, marked)}
        if kind == "speech":
            q["pesq"] = pesq_wb(clip, marked)
        elif speech is not None:
            q["pesq"] = pesq_wb(clip, marked)  # the mix against the unmarked mix
            q["pesq_speech"] = pesq_wb(speech, speech + (marked - clip))  # the speech alone plus the change
        qual.append(q)
        wrong_keys = [create(method, rng.bytes(16)) for _ in range(fp_keys)]
        for a, f in atk.items():
            y = f(marked)
            r = wm.detect(y, SR)
            row = rows[a]
            row["n"] += 1
            row["exact"] += r.payload == PAYLOAD
            row["det"] += bool(r.present)
            row["wrong"] += r.payload is not None and r.payload != PAYLOAD
            # unmarked audio with the right key and with other keys; the marked clip with another key
            u = f(clip)
            trials = [(wm, u), *((k, u) for k in wrong_keys), (wrong_keys[0], y)]
            for d, z in trials:
                ru = d.detect(z, SR)
                fp["trials"] += 1
                fp["present"] += bool(ru.present)
                fp["payloads"] += ru.payload is not None
                fp["min_p"] = min(fp["min_p"], ru.p_value)
    return {"method": method, "kind": kind, "rows": rows, "fp": fp, "quality": qual}


def speed(method: str, kind: str, count: int, work: str, seconds: float) -> dict:
    """Embedding and detection speed on ``kind`` as x real time (clip seconds per wall second)."""
    from . import create

    wm = create(method, b"benchmark key " + method.encode())
    wm.detect(np.zeros(SR, np.float32) + 1e-3, SR)  # builds the codebook once
    te = td = 0.0
    total = 0.0
    for _, clip, _ in clips(kind, count, work, seconds):
        t0 = time.perf_counter()
        marked = wm.embed(clip, SR, PAYLOAD)
        t1 = time.perf_counter()
        wm.detect(marked, SR)
        td += time.perf_counter() - t1
        te += t1 - t0
        total += len(clip) / SR
    return {"embed_x": total / te, "detect_x": total / td}


def run(
    methods: list[str],
    kinds: list[str],
    work: str,
    count: int = 8,
    attack_names: list[str] | None = None,
    fp_keys: int = 2,
    seconds: float = CLIP_S,
    jobs: int = 1,
    log: Callable[[str], None] = print,
) -> dict:
    """Every (method, kind): counts, quality and speed, as ``{method: {kind: result}}``."""
    names = list(attack_names or attacks(work))
    jobs_list = [(m, k) for m in methods for k in kinds]
    results: dict = {m: {} for m in methods}
    t0 = time.time()

    def done(res: dict) -> None:
        results[res["method"]][res["kind"]] = res
        log(f"{res['method']} {res['kind']}: done ({time.time() - t0:.0f} s)")

    if jobs > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futs = [pool.submit(run_kind, m, k, count, work, names, fp_keys, seconds) for m, k in jobs_list]
            for fut in futs:
                done(fut.result())
    else:
        for m, k in jobs_list:
            done(run_kind(m, k, count, work, names, fp_keys, seconds))
    for m, k in jobs_list:  # alone, after the rest: the machine is otherwise idle (for this run)
        results[m][k]["speed"] = speed(m, k, count, work, seconds)
    return results


def _mean_min(values: list[float]) -> str:
    return f"{np.mean(values):.2f} (min {min(values):.2f})" if values else "-"


def table(results: dict) -> str:
    """Markdown: per method, a quality/speed/false-positive table per kind and an attack table."""
    lines: list[str] = []
    for method, kinds in results.items():
        ks = list(kinds)
        lines.append(f"\n**{method}**\n")
        lines.append("| | " + " | ".join(ks) + " |")
        lines.append("|---|" + "---|" * len(ks))
        q = {k: kinds[k]["quality"] for k in ks}
        lines.append(
            "| SNR dB, mean (min) | "
            + " | ".join(f"{np.mean([c['snr'] for c in q[k]]):.1f} (min {min(c['snr'] for c in q[k]):.1f})" for k in ks)
            + " |"
        )
        lines.append(
            "| PESQ wb, mean (min) | "
            + " | ".join(_mean_min([c["pesq"] for c in q[k] if "pesq" in c]) for k in ks)
            + " |"
        )
        if any("pesq_speech" in c for k in ks for c in q[k]):
            lines.append(
                "| PESQ wb, speech alone + the change | "
                + " | ".join(_mean_min([c["pesq_speech"] for c in q[k] if "pesq_speech" in c]) for k in ks)
                + " |"
            )
        for j, (lo, hi) in enumerate(SPECTRAL_BANDS):
            lines.append(
                f"| change vs signal {lo / 1000:g}-{hi / 1000:g} kHz, dB | "
                + " | ".join(f"{np.mean([c['bands'][j] for c in q[k]]):.1f}" for k in ks)
                + " |"
            )
        for a in kinds[ks[0]]["rows"]:
            cells = []
            for k in ks:
                r = kinds[k]["rows"][a]
                extra = f" ({r['det']} found)" if r["det"] != r["exact"] else ""
                extra += f", {r['wrong']} WRONG" if r["wrong"] else ""
                cells.append(f"{r['exact']}/{r['n']}{extra}")
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
        lines.append(
            "| false positives / wrong payloads (trials) | "
            + " | ".join(
                f"{kinds[k]['fp']['present']} / {kinds[k]['fp']['payloads']} ({kinds[k]['fp']['trials']})" for k in ks
            )
            + " |"
        )
        lines.append(
            "| smallest p-value, unmarked or wrong key | "
            + " | ".join(f"{kinds[k]['fp']['min_p']:.2g}" for k in ks)
            + " |"
        )
        if all("speed" in kinds[k] for k in ks):
            lines.append(
                "| embed / detect, x real time | "
                + " | ".join(f"{kinds[k]['speed']['embed_x']:.0f} / {kinds[k]['speed']['detect_x']:.0f}" for k in ks)
                + " |"
            )
        trials = sum(kinds[k]["fp"]["trials"] for k in ks)
        fps = sum(kinds[k]["fp"]["present"] for k in ks)
        wrong = sum(kinds[k]["fp"]["payloads"] + sum(r["wrong"] for r in kinds[k]["rows"].values()) for k in ks)
        lines.append(f"\nFalse positives: {fps}/{trials} unmarked or wrongly keyed trials; wrong payloads: {wrong}.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from . import METHODS

    ap = argparse.ArgumentParser(prog="python -m ccsm_watermark.bench", description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=",".join(METHODS), help="comma list (default: all)")
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"comma list of {', '.join(KINDS)} (default: all)")
    ap.add_argument("--clips", type=int, default=8, help="clips per kind (default 8)")
    ap.add_argument("--seconds", type=float, default=CLIP_S, help="clip length (default 10)")
    ap.add_argument("--attacks", default=None, help="comma list of attack names (default: all)")
    ap.add_argument("--fp-keys", type=int, default=2, help="random wrong keys per clip and attack (default 2)")
    ap.add_argument("--quick", action="store_true", help="1 clip per kind of 6 s, 4 attacks, 1 wrong key (seconds)")
    ap.add_argument("--jobs", type=int, default=1, help="processes (kinds run in parallel; default 1)")
    ap.add_argument("--work", default=None, help="folder for the material (default: a temporary one)")
    ap.add_argument("--json", default=None, help="also write the raw results here")
    args = ap.parse_args(argv)
    for tool in ("ffmpeg", "espeak-ng"):
        if shutil.which(tool) is None:
            print(f"error: {tool} not found (hint: apt-get install -y ffmpeg espeak-ng)", file=sys.stderr)
            return 2
    if args.quick:
        args.clips, args.seconds, args.fp_keys, args.attacks = 1, 6.0, 1, ",".join(QUICK_ATTACKS)
    known = attacks(".")
    names = [a.strip() for a in args.attacks.split(",")] if args.attacks else list(known)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    bad = [a for a in names if a not in known] + [k for k in kinds if k not in KINDS]
    if bad or args.clips < 1 or args.fp_keys < 1 or args.jobs < 1:
        print(f"error: unknown or bad option values {bad or ''} (hint: see --help)", file=sys.stderr)
        return 2
    work = args.work or tempfile.mkdtemp(prefix="ccsm-wm-bench-")
    os.makedirs(work, exist_ok=True)
    res = run(
        [m.strip() for m in args.methods.split(",") if m.strip()],
        kinds,
        work,
        count=args.clips,
        attack_names=names,
        fp_keys=args.fp_keys,
        seconds=args.seconds,
        jobs=args.jobs,
        log=lambda s: print(s, file=sys.stderr, flush=True),
    )
    print(table(res))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1, default=lambda o: o.item() if hasattr(o, "item") else str(o))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
