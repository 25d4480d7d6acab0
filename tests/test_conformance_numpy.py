"""The conformance suite runs against the reference itself (sanity of the suite and of NumPy)."""

from ccsm_core.testing.conformance import BackendConformance


class TestNumpyBackend(BackendConformance):
    backend_name = "numpy"
