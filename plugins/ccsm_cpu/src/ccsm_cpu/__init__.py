"""ccsm-cpu: the GGML CPU backend for ccsm (through cffi over the ggml-python libraries).

This module stays light: the backend lives in `ccsm_cpu.backend` and loads the library on use.
"""

__version__ = "0.1.0"
