"""The core's backend conformance suite, run against ggml-cpu (one and two threads)."""

from ccsm_core.testing.conformance import BackendConformance


class TestGgmlCpuConformance(BackendConformance):
    backend_name = "ggml-cpu"
    backend_options = {"threads": 1}


class TestGgmlCpuConformanceTwoThreads(BackendConformance):
    """Every graph on two threads, however small (the default runs small graphs on one)."""

    backend_name = "ggml-cpu"
    backend_options = {"threads": 2, "min_parallel_work": 0}
