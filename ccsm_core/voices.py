"""Saved voices: context turns (speaker, text, Mimi codes) kept on disk so audio is encoded once.

A voice file (``NAME.ccsmvoice``) is self-describing, versioned and checksummed::

    CCSMVOICE 1\\n
    {"name": ..., "speaker": ..., "turns": [{"text": ..., "frames": ...}], ...}\\n
    payload: the codes, little-endian uint16, turn after turn, each [num_codebooks, frames] row-major

`read_voice` checks every field, size and the checksum before it allocates or computes anything
from them; `write_voice` and `VoiceStore` replace files atomically.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import io
import json
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

import numpy as np

from .errors import CcsmError, FormatError, ModelError, UsageError
from .files import write_atomic
from .generator import Segment
from .limits import loads_json, regular_file
from .models.mimi_blocks import encode_blocks

FORMAT_VERSION = 1
SUFFIX = ".ccsmvoice"
MAGIC = b"CCSMVOICE"
FRAME_RATE = 12.5  # Mimi frames per second
AUDIO_VOCAB = 2051  # CSM's audio ids: 2048 Mimi codes + 3 special ids
MAX_HEADER_BYTES = 1 << 20
MAX_CODEBOOKS = 64
MAX_FRAMES = 20_000  # per turn (26 minutes)
MAX_TURNS = 1_000
MAX_SPEAKER = 1_000_000
MAX_FIELD_CHARS = 256  # model, codec, created
MAX_FILE_BYTES = 64 + MAX_HEADER_BYTES + 2 * MAX_CODEBOOKS * MAX_FRAMES * MAX_TURNS
DTYPE = "uint16"
HUB_REPO = "sesame/csm-1b"
HUB_HINT = f"download the prompts where a network exists: huggingface-cli download {HUB_REPO} --include 'prompts/*'"

# The transcripts of the prompts in sesame/csm-1b, as the original run_csm.py gives them.
HUB_TRANSCRIPTS: dict[str, tuple[int, str]] = {
    "conversational_a": (
        0,
        "like revising for an exam I'd have to try and like keep up the momentum because I'd "
        "start really early I'd be like okay I'm gonna start revising now and then like "
        "you're revising for ages and then I just like start losing steam I didn't do that "
        "for the exam we had recently to be fair that was a more of a last minute scenario "
        "but like yeah I'm trying to like yeah I noticed this yesterday that like Mondays I "
        "sort of start the day with this not like a panic but like a",
    ),
    "conversational_b": (
        1,
        "like a super Mario level. Like it's very like high detail. And like, once you get "
        "into the park, it just like, everything looks like a computer game and they have all "
        "these, like, you know, if, if there's like a, you know, like in a Mario game, they "
        "will have like a question block. And if you like, you know, punch it, a coin will "
        "come out. So like everyone, when they come into the park, they get like this little "
        "bracelet and then you can go punching question blocks around.",
    ),
}

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def check_name(name: Any) -> str:
    """``name`` if it can name a voice (letters, digits, ``-``, ``_``, ``.``; 1-64 characters; no
    leading dot), else `UsageError`."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name.startswith("."):
        raise UsageError(
            f"{name!r} cannot name a voice",
            "use 1-64 letters, digits, '-', '_' or '.', not starting with '.'",
        )
    return name


def _utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


@dataclass(frozen=True)
class VoiceTurn:
    """One turn of a voice: its transcript and its Mimi codes (``int64 [num_codebooks, T]``,
    read-only)."""

    text: str
    codes: np.ndarray

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not self.text.strip():
            raise UsageError("a voice turn has no text", "give the words spoken in the audio")
        arr = np.asarray(self.codes)
        if arr.ndim != 2 or arr.dtype.kind not in "iu":
            raise UsageError(
                f"voice codes must be integers of shape [codebooks, frames], got {arr.dtype} {list(arr.shape)}",
                "use codes made by Mimi (ccsm encode)",
            )
        if not 1 <= arr.shape[0] <= MAX_CODEBOOKS or not 1 <= arr.shape[1] <= MAX_FRAMES:
            raise UsageError(
                f"voice codes have shape {list(arr.shape)}: need 1..{MAX_CODEBOOKS} codebooks and "
                f"1..{MAX_FRAMES} frames",
                "use a shorter recording (split it into turns)",
            )
        if arr.min() < 0 or arr.max() >= AUDIO_VOCAB:
            raise UsageError(f"voice codes must lie in 0..{AUDIO_VOCAB - 1}", "use codes made by Mimi")
        codes = np.array(arr, dtype=np.int64, order="C", copy=True)
        codes.setflags(write=False)
        object.__setattr__(self, "codes", codes)

    def frames(self) -> int:
        """The number of frames (80 ms each)."""
        return int(self.codes.shape[1])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VoiceTurn):
            return NotImplemented
        return self.text == other.text and np.array_equal(self.codes, other.codes)

    def __hash__(self) -> int:
        return hash((self.text, self.codes.shape, self.codes.tobytes()))


@dataclass(frozen=True)
class Voice:
    """A saved voice: turns of one speaker, their codes made with the Mimi codec ``codec``."""

    name: str
    speaker: int  # the speaker id of every turn
    turns: tuple[VoiceTurn, ...]
    codec: str  # codec_fingerprint() of the Mimi that made the codes
    model: str  # what made it, for display (a model folder name, "demo", ...)
    created: str  # ISO 8601 UTC

    def __post_init__(self) -> None:
        check_name(self.name)
        if not _is_int(self.speaker) or not 0 <= self.speaker <= MAX_SPEAKER:
            raise UsageError(
                f"speaker must be an integer in 0..{MAX_SPEAKER}, got {self.speaker!r}", "give a speaker id such as 0"
            )
        object.__setattr__(self, "speaker", int(self.speaker))
        turns = tuple(self.turns)
        if not 1 <= len(turns) <= MAX_TURNS or not all(isinstance(t, VoiceTurn) for t in turns):
            raise UsageError(
                f"a voice needs 1..{MAX_TURNS} turns (VoiceTurn), got {len(turns)}", "give each turn its text and audio"
            )
        if len({t.codes.shape[0] for t in turns}) != 1:
            raise UsageError(
                "the turns of a voice must have the same number of codebooks", "encode every turn with the same Mimi"
            )
        object.__setattr__(self, "turns", turns)
        for field in ("codec", "model", "created"):
            value = getattr(self, field)
            if not isinstance(value, str) or not value or len(value) > MAX_FIELD_CHARS:
                raise UsageError(
                    f"voice {field} must be a string of 1..{MAX_FIELD_CHARS} characters", "shorten the text given"
                )

    @property
    def num_codebooks(self) -> int:
        """Codebooks per frame (32 for CSM-1B)."""
        return int(self.turns[0].codes.shape[0])

    def segments(self, speaker: int | None = None) -> list[Segment]:
        """The turns as context Segments; ``speaker`` overrides the id (dialogues remap ids)."""
        who = self.speaker if speaker is None else speaker
        return [Segment(who, t.text, codes=t.codes) for t in self.turns]

    def frames(self) -> int:
        """Total frames of all turns."""
        return sum(t.frames() for t in self.turns)

    def seconds(self) -> float:
        """Total duration of all turns (Mimi makes 12.5 frames a second)."""
        return self.frames() / FRAME_RATE

    def check_codec(self, mimi: Any) -> None:
        """`ModelError` unless ``mimi`` is the codec the codes were made with (``None``: cannot
        check, so pass)."""
        if mimi is None:
            return
        hint = (
            f"make the voice again with this model: ccsm voice add {self.name} --force ... "
            f"(it was made with {self.model})"
        )
        if int(mimi.num_codebooks) != self.num_codebooks:
            raise ModelError(
                f"voice {self.name} has {self.num_codebooks} codebooks, this model's Mimi uses {mimi.num_codebooks}",
                hint,
            )
        mine = codec_fingerprint(mimi)
        if mine != self.codec:
            raise ModelError(
                f"voice {self.name} was made with another Mimi codec ({self.codec}; this model's is {mine})", hint
            )


_FINGERPRINT_ATTR = "_ccsm_codec_fingerprint"
_fingerprints: dict[int, tuple[Any, str]] = {}  # id -> (object, fingerprint), for objects without attributes


def codec_fingerprint(mimi: Any) -> str:
    """A stable id of a Mimi codec: sha256 (first 16 hex digits) of its codebook count,
    cardinality and codebooks rounded to float16, so the same codec stored in f32 or f16 gives the
    same id. Computed once per Mimi object."""
    cached = getattr(mimi, _FINGERPRINT_ATTR, None)
    if isinstance(cached, str):
        return cached
    held = _fingerprints.get(id(mimi))
    if held is not None and held[0] is mimi:
        return held[1]
    n, bins = int(mimi.num_codebooks), int(mimi.cardinality)
    h = hashlib.sha256(f"mimi codebooks={n} cardinality={bins}\n".encode())
    for book in list(mimi.quantizer.codebooks)[:n]:
        arr = np.ascontiguousarray(np.asarray(book, np.float32).astype("<f2"))
        h.update(f"{list(arr.shape)}\n".encode())
        h.update(arr.tobytes())
    fp = h.hexdigest()[:16]
    try:
        setattr(mimi, _FINGERPRINT_ATTR, fp)
    except (AttributeError, TypeError):
        _fingerprints[id(mimi)] = (mimi, fp)
    return fp


def make_voice(
    speech: Any, name: str, speaker: int, turns: Sequence[tuple[str, np.ndarray]], *, model: str | None = None
) -> Voice:
    """A voice of ``turns`` ``(text, audio)``: 24 kHz mono float32 audio, encoded with the Mimi of
    ``speech`` (a `ccsm_core.speech.Speech`). An integer array ``[num_codebooks, T]`` in place of
    the audio is taken as Mimi codes already made with that codec."""
    check_name(name)
    if not turns:
        raise UsageError("a voice needs at least one turn", "give --text and --audio")
    mimi = speech.need_mimi()
    made = []
    for text, data in turns:
        if not isinstance(text, str) or not text.strip():
            raise UsageError("a voice turn has no text", "give the words spoken in the audio")
        arr = np.asarray(data)
        if arr.ndim == 2 and arr.dtype.kind in "iu":
            if arr.shape[0] != mimi.num_codebooks or (arr.size and (arr.min() < 0 or arr.max() >= mimi.cardinality)):
                raise UsageError(
                    f"codes of shape {list(arr.shape)} are not this Mimi's",
                    f"give codes of shape [{mimi.num_codebooks}, T] in 0..{mimi.cardinality - 1} (ccsm encode)",
                )
            codes = arr
        else:
            audio = np.asarray(arr, np.float32).reshape(-1)
            if audio.size == 0:
                raise UsageError("a voice turn has no audio", "give a recording of the turn")
            codes = encode_blocks(mimi, audio)
        made.append(VoiceTurn(text, codes))
    if model is None:
        model = "demo" if getattr(speech, "demo", False) else _model_label(Path(speech.source))
    return Voice(name, speaker, tuple(made), codec_fingerprint(mimi), model[:MAX_FIELD_CHARS], _utc_now())


def _model_label(source: Path) -> str:
    """A short name of a model source: a cached repo's id, else the file or folder name."""
    parts = source.parts
    if "snapshots" in parts:
        i = parts.index("snapshots")
        if i > 0 and parts[i - 1].startswith("models--"):
            return parts[i - 1][len("models--") :].replace("--", "/")
    return source.name or str(source)


# ---------------------------------------------------------------------------------------------
# the file format


def _header(voice: Voice, payload: bytes) -> dict[str, Any]:
    return {
        "name": voice.name,
        "speaker": voice.speaker,
        "model": voice.model,
        "codec": voice.codec,
        "created": voice.created,
        "num_codebooks": voice.num_codebooks,
        "dtype": DTYPE,
        "turns": [{"text": t.text, "frames": t.frames()} for t in voice.turns],
        "payload_bytes": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
    }


def voice_bytes(voice: Voice) -> bytes:
    """The file form of ``voice``."""
    payload = b"".join(t.codes.astype("<u2").tobytes(order="C") for t in voice.turns)
    header = json.dumps(_header(voice, payload), ensure_ascii=False, separators=(",", ":")).encode()
    if len(header) + 1 > MAX_HEADER_BYTES:
        raise UsageError(
            f"voice {voice.name}: its texts are too long to save (header over {MAX_HEADER_BYTES} bytes)",
            "use fewer or shorter turns",
        )
    return b"%s %d\n%s\n%s" % (MAGIC, FORMAT_VERSION, header, payload)


_REPAIR = "the file is damaged or not a ccsm voice: export it again, or make it again with `ccsm voice add`"


def _parse(f: IO[bytes], size: int, where: str) -> Voice:
    """A voice from the file ``f`` of ``size`` bytes, each field checked before it is used."""

    def bad(cause: str, hint: str = _REPAIR) -> FormatError:
        return FormatError(f"{where}: {cause}", hint)

    first = f.readline(len(MAGIC) + 12)
    magic, _, rest = first.partition(b" ")
    if magic != MAGIC:
        raise bad("not a ccsm voice file (no CCSMVOICE magic)", "give a .ccsmvoice file made by `ccsm voice export`")
    if not first.endswith(b"\n") or not rest[:-1].isdigit() or len(rest) > 10:
        raise bad("its CCSMVOICE line is cut short or malformed")
    version = int(rest[:-1])
    if version > FORMAT_VERSION:
        raise bad(
            f"voice format version {version} was made by a newer ccsm (this one reads version {FORMAT_VERSION})",
            "upgrade ccsm",
        )
    if version != FORMAT_VERSION:
        raise bad(f"unknown voice format version {version}")
    line = f.readline(MAX_HEADER_BYTES)
    if not line.endswith(b"\n"):
        if len(line) >= MAX_HEADER_BYTES:
            raise bad(f"its header line is longer than {MAX_HEADER_BYTES} bytes")
        raise bad("the file is truncated (its header is incomplete)")
    try:
        head = loads_json(line, "header", _REPAIR)
    except FormatError as e:
        raise bad(f"its header is not JSON ({str(e).removeprefix('header: ')})") from None
    if not isinstance(head, dict):
        raise bad("its header is not a JSON object")

    def field(key: str, kind: type | tuple[type, ...], what: str) -> Any:
        value = head.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise bad(f"header field {key!r} must be {what}, got {type(value).__name__}")
        return value

    def check_int(value: Any, lo: int, hi: int, label: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise bad(f"header field {label} = {str(value)[:40]} is not an integer in {lo}..{hi}")
        return value

    def int_field(key: str, lo: int, hi: int) -> int:
        return check_int(head.get(key), lo, hi, repr(key))

    def encodable(value: str) -> bool:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate escaped in the JSON
            return False
        return True

    def str_field(key: str) -> str:
        value = field(key, str, "a string")
        if not value or len(value) > MAX_FIELD_CHARS or not encodable(value):
            raise bad(f"header field {key!r} must be 1..{MAX_FIELD_CHARS} characters of text")
        return value

    name = field("name", str, "a string")
    try:
        check_name(name)
    except UsageError:
        raise bad(f"header field 'name' = {name[:80]!r} is not a valid voice name") from None
    speaker = int_field("speaker", 0, MAX_SPEAKER)
    model, codec, created = str_field("model"), str_field("codec"), str_field("created")
    ncb = int_field("num_codebooks", 1, MAX_CODEBOOKS)
    if head.get("dtype") != DTYPE:
        raise bad(f"header field 'dtype' must be {DTYPE!r}, got {str(head.get('dtype'))[:40]!r}")
    turns = field("turns", list, "a list")
    if not 1 <= len(turns) <= MAX_TURNS:
        raise bad(f"it has {len(turns)} turns (1..{MAX_TURNS} allowed)")
    texts, frames = [], []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise bad(f"turn {i + 1} is not a JSON object")
        text = turn.get("text")
        if not isinstance(text, str) or not text.strip():
            raise bad(f"turn {i + 1} has no text")
        if not encodable(text):
            raise bad(f"turn {i + 1} has text that is not valid Unicode")
        texts.append(text)
        frames.append(check_int(turn.get("frames"), 1, MAX_FRAMES, f"turns[{i}].frames"))
    expected = 2 * ncb * sum(frames)  # bounded: 2 * 64 * 20000 * 1000
    payload_bytes = int_field("payload_bytes", 0, 2 * MAX_CODEBOOKS * MAX_FRAMES * MAX_TURNS)
    if payload_bytes != expected:
        raise bad(f"header says {payload_bytes} payload bytes, its turns need {expected}")
    digest = field("payload_sha256", str, "a string")
    if not _SHA256.fullmatch(digest):
        raise bad("header field 'payload_sha256' is not 64 lowercase hex digits")
    start = f.tell()
    if start + payload_bytes != size:
        if start + payload_bytes > size:
            raise bad(f"the file is truncated ({size - start} of {payload_bytes} payload bytes)")
        raise bad(f"the file has {size - start - payload_bytes} bytes after its payload")
    payload = f.read(payload_bytes)
    if len(payload) != payload_bytes:
        raise bad(f"the file is truncated ({len(payload)} of {payload_bytes} payload bytes)")
    if hashlib.sha256(payload).hexdigest() != digest:
        raise bad("its payload does not match its checksum (sha256)")
    flat = np.frombuffer(payload, dtype="<u2")
    if flat.size and int(flat.max()) >= AUDIO_VOCAB:
        raise bad(f"it holds code {int(flat.max())}, beyond the audio vocabulary (0..{AUDIO_VOCAB - 1})")
    out, at = [], 0
    for text, t in zip(texts, frames):
        out.append(VoiceTurn(text, flat[at : at + ncb * t].reshape(ncb, t)))
        at += ncb * t
    return Voice(name, speaker, tuple(out), codec, model, created)


def _regular(path: Path) -> None:
    """A missing voice file is a `UsageError` naming it; a FIFO, device or folder is refused
    before it is opened (it would block or never end)."""
    if not path.exists() and not path.is_symlink():
        raise UsageError(f"voice file {path} does not exist", "check the path")
    if path.is_dir():
        raise UsageError(f"{path} is a folder, not a voice file", f"give a {SUFFIX} file")
    regular_file(path, "voice file")


def read_voice(path: str | os.PathLike[str]) -> Voice:
    """The voice in ``path``, fully validated (`FormatError` naming the file and the cause)."""
    p = Path(path)
    _regular(p)
    try:
        with open(p, "rb") as f:
            return _parse(f, os.fstat(f.fileno()).st_size, str(p))
    except FileNotFoundError:
        raise UsageError(f"voice file {p} does not exist", "check the path") from None
    except IsADirectoryError:
        raise UsageError(f"{p} is a folder, not a voice file", f"give a {SUFFIX} file") from None
    except OSError as e:
        raise FormatError(f"{p}: cannot read it ({e.strerror or e})", "check the file and its permissions") from None


def _read_bytes(path: Path) -> tuple[bytes, Voice]:
    """The bytes of a voice file and the voice they hold (read once, so both agree)."""
    _regular(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise FormatError(f"{path}: {size} bytes is more than a voice file holds", _REPAIR)
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"voice file {path} does not exist", "check the path") from None
    except OSError as e:
        raise FormatError(f"{path}: cannot read it ({e.strerror or e})", "check the file and its permissions") from None
    return data, _parse(io.BytesIO(data), len(data), str(path))


def _write_atomic(data: bytes, path: Path, *, replace: bool = True) -> None:
    """`ccsm_core.files.write_atomic` into ``path``'s folder, made if missing."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot write {path} ({e.strerror or e})", "check the folder and its permissions") from None
    write_atomic(path, data, replace=replace)


def write_voice(voice: Voice, path: str | os.PathLike[str]) -> None:
    """Write ``voice`` to ``path`` atomically (a temporary file in the same folder, fsync'ed,
    then renamed over ``path``)."""
    _write_atomic(voice_bytes(voice), Path(path))


# ---------------------------------------------------------------------------------------------
# the store


def default_root() -> Path:
    """``$CCSM_DATA_DIR/voices`` if set, else the user data folder's ``voices``."""
    env = os.environ.get("CCSM_DATA_DIR")
    if env:
        return Path(env).expanduser() / "voices"
    import platformdirs

    return platformdirs.user_data_path("ccsm") / "voices"


class VoiceStore:
    """The saved voices: one ``NAME.ccsmvoice`` file each in ``root``."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_root()

    def path(self, name: str) -> Path:
        """The file of voice ``name`` (which need not exist); `UsageError` for an invalid name."""
        return self.root / f"{check_name(name)}{SUFFIX}"

    def names(self) -> list[str]:
        """The names of the voice files in the store, sorted."""
        if not self.root.is_dir():
            return []
        out = []
        for p in self.root.iterdir():
            stem = p.name[: -len(SUFFIX)] if p.name.endswith(SUFFIX) else None
            if stem and _NAME.fullmatch(stem) and not stem.startswith("."):
                out.append(stem)
        return sorted(out)

    def _unknown(self, name: str) -> UsageError:
        known = self.names()
        close = difflib.get_close_matches(name, known, n=3)
        if close:
            hint = f"did you mean {' or '.join(close)}? `ccsm voice list` shows them all"
        elif known:
            hint = f"saved voices: {', '.join(known[:10])}{' ...' if len(known) > 10 else ''}"
        else:
            hint = "no voices are saved yet: make one with `ccsm voice add NAME --speaker S --text T --audio FILE`"
        return UsageError(f"no voice named {name} in {self.root}", hint)

    def add(self, voice: Voice, *, replace: bool = False) -> Path:
        """Save ``voice`` under its name; an existing voice of that name is an error unless
        ``replace``. Either way the file appears at once, complete."""
        path = self.path(voice.name)
        try:
            _write_atomic(voice_bytes(voice), path, replace=replace)
        except FileExistsError:
            raise UsageError(
                f"voice {voice.name} exists", f"pass --force to replace it, or choose another name ({path})"
            ) from None
        return path

    def get(self, name: str) -> Voice:
        """Voice ``name`` (named after its file); `UsageError` naming close matches if there is
        none, `FormatError` if its file is damaged."""
        path = self.path(name)
        if not path.is_file():
            raise self._unknown(name)
        voice = read_voice(path)
        return voice if voice.name == name else dataclasses.replace(voice, name=name)

    def scan(self) -> list[tuple[str, Voice | CcsmError]]:
        """Every file of the store: its voice, or the error that keeps it from being read."""
        out: list[tuple[str, Voice | CcsmError]] = []
        for name in self.names():
            try:
                out.append((name, self.get(name)))
            except CcsmError as e:
                out.append((name, e))
        return out

    def list(self) -> list[Voice]:
        """The readable voices; each unreadable file is reported with a warning (`scan` gives
        its error)."""
        voices = []
        for name, item in self.scan():
            if isinstance(item, Voice):
                voices.append(item)
            else:
                warnings.warn(f"voice {name} cannot be read: {item.one_line()}", stacklevel=2)
        return voices

    def remove(self, name: str) -> None:
        """Delete voice ``name`` (a damaged file too); `UsageError` if there is none."""
        path = self.path(name)
        try:
            path.unlink()
        except FileNotFoundError:
            raise self._unknown(name) from None
        except OSError as e:
            raise UsageError(f"cannot remove {path} ({e.strerror or e})", "check its permissions") from None

    def export(self, name: str, dest: Path) -> Path:
        """A checked copy of the voice's file at ``dest`` (a file, or a folder to put
        ``NAME.ccsmvoice`` in), written atomically."""
        path = self.path(name)
        if not path.is_file():
            raise self._unknown(name)
        data, _ = _read_bytes(path)
        dest = Path(dest).expanduser()
        if dest.is_dir():
            dest = dest / path.name
        _write_atomic(data, dest)
        return dest

    def import_(self, src: Path, *, name: str | None = None, replace: bool = False) -> Voice:
        """Add the voice in the file ``src`` (checked first), under ``name`` if given."""
        voice = read_voice(src)
        if name is not None and name != voice.name:
            voice = dataclasses.replace(voice, name=check_name(name))
        self.add(voice, replace=replace)
        return voice


# ---------------------------------------------------------------------------------------------
# the prompts of sesame/csm-1b in the local Hugging Face cache


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache folder, from the environment as huggingface_hub reads it."""
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(key):
            return Path(os.environ[key]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "huggingface" / "hub"


def _hub_snapshot(cache: Path) -> Path | None:
    repo = cache / f"models--{HUB_REPO.replace('/', '--')}"
    ref = repo / "refs" / "main"
    rev = ref.read_text(errors="replace").strip() if ref.is_file() else ""
    if re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", rev) and not rev.startswith("."):
        snap = repo / "snapshots" / rev
        if (snap / "prompts").is_dir():
            return snap
    snaps = repo / "snapshots"
    found = [s for s in snaps.iterdir() if (s / "prompts").is_dir()] if snaps.is_dir() else []
    return max(found, key=lambda s: s.stat().st_mtime) if found else None


def hub_prompts() -> tuple[list[tuple[str, int, str, Path]], list[tuple[Path, str]]]:
    """The prompts of the cached ``sesame/csm-1b``: ``(voice name, speaker, transcript, wav)``
    for each with a transcript, and ``(wav, reason)`` for those skipped. Never downloads;
    `UsageError` if no prompt is cached."""
    cache = hf_cache_dir()
    snap = _hub_snapshot(cache)
    wavs = sorted((snap / "prompts").glob("*.wav")) if snap is not None else []
    if not wavs:
        raise UsageError(f"no {HUB_REPO} prompts in the Hugging Face cache ({cache})", HUB_HINT)
    found: list[tuple[str, int, str, Path]] = []
    skipped: list[tuple[Path, str]] = []
    for wav in wavs:
        stem = wav.stem
        if stem in HUB_TRANSCRIPTS:
            speaker, text = HUB_TRANSCRIPTS[stem]
        else:
            txt = wav.with_suffix(".txt")
            text = txt.read_text(encoding="utf-8", errors="replace").strip() if txt.is_file() else ""
            speaker = 0
            if not text:
                skipped.append((wav, "no transcript"))
                continue
        try:
            check_name(stem)
        except UsageError:
            skipped.append((wav, "its name cannot name a voice"))
            continue
        found.append((stem, speaker, text, wav))
    return found, skipped


def from_hub_prompts() -> list[tuple[str, int, str, Path]]:
    """``(voice name, speaker, transcript, wav path)`` of each cached ``sesame/csm-1b`` prompt with
    a transcript (see `hub_prompts`)."""
    return hub_prompts()[0]
