"""The core's backend conformance suite, on MLX (default options and bf16 weights kept as stored)."""

from ccsm_core.testing.conformance import BackendConformance


class TestMlxConformance(BackendConformance):
    backend_name = "mlx"
