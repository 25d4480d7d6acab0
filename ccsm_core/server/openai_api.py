"""The OpenAI-compatible request bodies, their checks, and OpenAI's error shape.

Every value of a request is checked here (types and ranges by pydantic, the rest by the
``check_*`` functions) before it reaches a model, an allocation or any arithmetic. A failed check
is an `ApiError`: a status and one line naming the field, the cause and the fix.
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from ..errors import CcsmError
from ..voices import MAX_SPEAKER

SPEECH_ALIASES = ("csm", "tts-1", "tts-1-hd", "gpt-4o-mini-tts")  # accepted besides the served name
SPEECH_FORMATS = ("mp3", "opus", "wav", "flac", "pcm")
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse")
MAX_TOKENS = 4096  # most tokens one completion may ask for
DEFAULT_MAX_TOKENS = 256
MAX_CONTEXT_TURNS = 32
MAX_TURN_SECONDS = 60.0  # one context turn or voice recording
MAX_CONTEXT_SECONDS = 120.0  # all context turns of a request together
MAX_MESSAGES = 1000
MAX_STOPS = 4
MAX_STOP_CHARS = 256


class ApiError(Exception):
    """An HTTP error in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""

    TYPES = {401: "authentication_error", 429: "rate_limit_error", 500: "server_error", 503: "server_error"}

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        kind: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.kind = kind or self.TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.kind, self.param, self.code)


def error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def bad(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    """A 400 invalid_request_error."""
    return ApiError(400, message, param=param, code=code)


def from_ccsm(e: CcsmError, param: str | None = None) -> ApiError:
    """A user-caused ccsm error (bad value, damaged file, prompt too long, ...) as a 400."""
    return bad(e.one_line(), param)


def validation_message(errors: list[Any]) -> tuple[str, str | None]:
    """One line (and the field) from pydantic's / FastAPI's validation errors."""
    if not errors:
        return "the request is invalid", None
    first = errors[0]
    loc = [str(x) for x in first.get("loc", ()) if x not in ("body", "query", "path", "form")]
    param = ".".join(loc) or None
    kind = first.get("type", "")
    if kind in ("json_invalid", "json_type"):
        return "the body is not valid JSON: send a JSON object with Content-Type: application/json", None
    if kind == "missing":
        return f"{param} is required", param
    if kind == "extra_forbidden":
        return f"unknown field {param!r}: remove it (see docs/server.md for the fields this server takes)", param
    msg = str(first.get("msg", "is invalid"))
    msg = msg[0].lower() + msg[1:] if msg else msg
    return (f"invalid {param}: {msg}" if param else f"invalid request: {msg}"), param


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------------------------
# speech


class ContextTurn(_Body):
    """An earlier turn heard before the new text: speaker, its words, its audio (base64 WAV/FLAC/OGG)."""

    speaker: int = Field(ge=0, le=MAX_SPEAKER)
    text: str = Field(min_length=1)
    audio: str = Field(min_length=1)


class SpeechRequest(_Body):
    """``POST /v1/audio/speech``: OpenAI's fields plus ccsm's (sampling, limits, context)."""

    model: str | None = None
    input: str
    voice: StrictStr | StrictInt | None = None
    instructions: str | None = None
    response_format: str = "mp3"
    speed: float = 1.0
    stream_format: Literal["audio", "sse"] | None = None
    temperature: float | None = Field(default=None, ge=0, le=5)
    topk: int | None = Field(default=None, ge=1, le=2051)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = Field(default=None, ge=0, lt=2**32)
    max_audio_ms: float = Field(default=90_000, ge=80, le=300_000)
    pause_ms: float = Field(default=320, ge=0, le=10_000)
    retries: int = Field(default=2, ge=0, le=10)
    context: list[ContextTurn] = Field(default_factory=list, max_length=MAX_CONTEXT_TURNS)


def check_speech(req: SpeechRequest, max_input_chars: int) -> None:
    """The checks pydantic cannot express (clear messages for OpenAI's unsupported values)."""
    if not req.input.strip():
        raise bad("input is empty: give the text to speak", "input")
    if len(req.input) > max_input_chars:
        raise bad(
            f"input has {len(req.input)} characters, more than this server's {max_input_chars}: split it into parts",
            "input",
        )
    if req.response_format not in SPEECH_FORMATS:
        raise bad(f"{req.response_format} is not supported: use mp3, opus, wav, flac or pcm", "response_format")
    if req.speed != 1.0:
        raise bad(f"speed {req.speed:g} is not supported: CSM speaks at its own pace; use 1.0", "speed")
    if req.instructions:
        raise bad("instructions are not supported by CSM: use a voice or context turns instead", "instructions")
    for turn in req.context:
        if not turn.text.strip() or len(turn.text) > max_input_chars:
            raise bad(f"a context turn's text must be 1..{max_input_chars} characters", "context")


def check_speech_model(model: str | None, served: str) -> None:
    if model is not None and model not in (served, *SPEECH_ALIASES):
        raise ApiError(
            404,
            f"model {model!r} is not served here: use {served!r} (or tts-1, gpt-4o-mini-tts)",
            param="model",
            code="model_not_found",
        )


def speaker_of(voice: str | int | None) -> int | None:
    """The speaker id a ``voice`` names (``0`` or ``"0"``), else None (a saved voice's name)."""
    if voice is None:
        return 0
    if isinstance(voice, int):
        if not 0 <= voice <= MAX_SPEAKER:
            raise bad(f"speaker id {voice} is out of range: use 0..{MAX_SPEAKER}", "voice")
        return voice
    if voice.isascii() and voice.isdigit():
        if len(voice) > 7 or int(voice) > MAX_SPEAKER:
            raise bad(f"speaker id {voice} is out of range: use 0..{MAX_SPEAKER}", "voice")
        return int(voice)
    return None


def unknown_voice(voice: str, available: list[str]) -> ApiError:
    saved = ", ".join(available[:20]) + (" ..." if len(available) > 20 else "") if available else "none yet"
    what = "an OpenAI voice, which CSM does not have" if voice in OPENAI_VOICES else "not a saved voice"
    return bad(
        f'voice {voice!r} is {what}: use a saved voice ({saved}) or a speaker id such as "0"',
        "voice",
        "voice_not_found",
    )


def decode_audio(data: bytes, what: str, param: str, max_seconds: float = MAX_TURN_SECONDS) -> np.ndarray:
    """WAV/FLAC/OGG/MP3 bytes as 24 kHz mono float32; the header is checked before any decoding."""
    import soundfile as sf

    from ..audio import SAMPLE_RATE, resample

    try:
        info = sf.info(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError):
        raise bad(f"{what} is not audio soundfile can read: send WAV, FLAC, OGG or MP3", param) from None
    if not 8000 <= info.samplerate <= 192_000 or not 1 <= info.channels <= 8:
        raise bad(f"{what} has {info.channels} channels at {info.samplerate} Hz: send 1-8 channels, 8-192 kHz", param)
    if not 0 < info.frames <= max_seconds * info.samplerate:
        raise bad(f"{what} lasts {info.duration:.1f} s: send 0-{max_seconds:g} s of audio", param)
    try:
        wave, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError):
        raise bad(f"{what} cannot be decoded: send an undamaged WAV, FLAC, OGG or MP3", param) from None
    if wave.shape[0] == 0 or not np.isfinite(wave).all():
        raise bad(f"{what} is empty or holds NaN samples: send a recording", param)
    return resample(wave.mean(axis=1), rate, SAMPLE_RATE)


def context_audio(turn: ContextTurn, index: int) -> np.ndarray:
    """A context turn's base64 audio, decoded and checked."""
    try:
        data = base64.b64decode(turn.audio, validate=True)
    except (binascii.Error, ValueError):
        raise bad(f"context[{index}].audio is not base64: send the file's bytes base64-encoded", "context") from None
    return decode_audio(data, f"context[{index}].audio", "context")


# --------------------------------------------------------------------------------------------
# text


class StreamOptions(_Body):
    include_usage: bool = False


class _TextBody(_Body):
    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = Field(default=None, ge=0, lt=2**63)
    stop: StrictStr | list[StrictStr] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=1)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    user: str | None = None


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]]
    name: str | None = None


class ChatRequest(_TextBody):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)


class CompletionRequest(_TextBody):
    """``POST /v1/completions``."""

    prompt: StrictStr | list[StrictStr]
    echo: bool = False


def chat_messages(req: ChatRequest, max_input_chars: int) -> list[dict[str, str]]:
    """The messages as ``{"role", "content"}`` strings (text parts joined), length-checked."""
    out, total = [], 0
    for i, m in enumerate(req.messages):
        if isinstance(m.content, str):
            content = m.content
        else:
            parts = []
            for part in m.content:
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise bad(f"messages[{i}].content: only text parts are supported", "messages")
                parts.append(part["text"])
            content = "".join(parts)
        total += len(content)
        out.append({"role": "system" if m.role == "developer" else m.role, "content": content})
    if total > max_input_chars:
        raise bad(f"the messages hold {total} characters, more than this server's {max_input_chars}", "messages")
    return out


def completion_prompt(req: CompletionRequest, max_input_chars: int) -> str:
    if req.echo:
        raise bad("echo is not supported: leave it false", "echo")
    prompt = req.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise bad("prompt must be a string (or a list of one string)", "prompt")
        prompt = prompt[0]
    if not prompt:
        raise bad("prompt is empty: give some text to continue", "prompt")
    if len(prompt) > max_input_chars:
        raise bad(f"prompt has {len(prompt)} characters, more than this server's {max_input_chars}", "prompt")
    return prompt


def text_settings(req: _TextBody, vocab_size: int) -> Any:
    """The `TextSettings` of a request (every value checked, the sampler chain built once)."""
    from ..errors import UsageError
    from ..textgen import TextSettings

    stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stops) > MAX_STOPS or any(not s or len(s) > MAX_STOP_CHARS for s in stops):
        raise bad(f"stop takes at most {MAX_STOPS} strings of 1..{MAX_STOP_CHARS} characters", "stop")
    bias: dict[int, float] = {}
    for key, value in (req.logit_bias or {}).items():
        if not key.isascii() or not key.isdigit() or int(key) >= vocab_size or not -100 <= value <= 100:
            raise bad(f"logit_bias needs token ids 0..{vocab_size - 1} mapped to -100..100", "logit_bias")
        bias[int(key)] = value
    most = getattr(req, "max_completion_tokens", None) or req.max_tokens or DEFAULT_MAX_TOKENS
    values: dict[str, Any] = {
        k: v
        for k, v in (
            ("temperature", req.temperature),
            ("top_p", req.top_p),
            ("seed", req.seed),
            ("frequency_penalty", req.frequency_penalty),
            ("presence_penalty", req.presence_penalty),
            ("logit_bias", bias or None),
        )
        if v is not None
    }
    settings = TextSettings(max_tokens=most, stop=tuple(stops), **values)
    try:
        settings.chain()
    except UsageError as e:
        raise from_ccsm(e) from None
    return settings


def check_text_model(model: str | None, served: str) -> None:
    if model is not None and model != served:
        raise ApiError(
            404, f"model {model!r} is not served here: use {served!r}", param="model", code="model_not_found"
        )
