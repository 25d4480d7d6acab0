"""ccsm plugin entry point: registers the ``onnx`` weight format (``.onnx`` files).

Cheap to import: the onnx package loads when a file is opened.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ccsm_core import hookimpl

if TYPE_CHECKING:
    from ccsm_core.tensors import WeightSource


def load(path: Path, *, validate: bool = True) -> WeightSource:
    """The Llama-family text model exported to ``path`` (see `ccsm_onnx.loader`)."""
    from .loader import load_onnx

    return load_onnx(path, validate=validate)


@hookimpl
def register_formats(register: Any) -> None:
    register(
        "onnx",
        load,
        suffixes=(".onnx",),
        summary="ONNX exports of Llama-family text models (torch.onnx, optimum; external data)",
    )
