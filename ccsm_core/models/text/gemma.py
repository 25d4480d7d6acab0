"""Gemma: GeGLU (tanh GELU); embeddings scaled by sqrt(dim); head size from ``key_length``;
RoPE on halves (NEOX); output head tied to the embeddings."""

from .arch import TextArch

ARCH = TextArch("gemma", neox_rope=True, activation="gelu_tanh", scaled_embeddings=True, hf_names=("gemma",))
