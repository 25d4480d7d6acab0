"""Phi-3: fused ``attn_qkv`` and fused ``ffn_up`` (gate, then up); RoPE on halves (NEOX)."""

from .arch import FusedArch

ARCH = FusedArch("phi3", neox_rope=True, hf_names=("phi3",))
