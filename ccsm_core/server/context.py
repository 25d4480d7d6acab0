"""What the handlers of one app share: the engine, the voice store, the limits and the names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .metrics import Metrics
from .openai_api import ApiError


@dataclass
class AppContext:
    """What the handlers share."""

    engine: Any
    store: Any  # VoiceStore
    marker: Any  # AppliedWatermark | None
    metrics: Metrics
    api_key: str | None
    max_input_chars: int
    max_body_bytes: int
    model_name: str
    text_model_name: str | None

    def need_speech(self) -> None:
        """Raise 404 when this server has no speech model."""
        if self.engine.speech is None:
            raise ApiError(
                404,
                "this server has no speech model: start it with `ccsm serve --model ...`",
                param="model",
                code="model_not_found",
            )

    def need_text(self) -> Any:
        """The loaded text model; 404 when this server has none."""
        if self.engine.text is None:
            raise ApiError(
                404,
                "this server has no text model: start it with `ccsm serve --text-model FILE.gguf` (or smollm2)",
                param="model",
                code="model_not_found",
            )
        return self.engine.text
