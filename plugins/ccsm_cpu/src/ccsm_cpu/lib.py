"""Finding, loading and checking the GGML shared libraries, and owning wrappers around them.

The libraries come from the pinned PyPI sdist ``ggml-python`` (built at install time), in its
``ggml/lib/`` folder. We locate that folder without importing the ``ggml`` package (which
would load its own ctypes bindings), open ``libggml-cpu.so`` (its dependency
``libggml-base.so`` comes along through its RUNPATH) and check our declarations on a tiny
graph before anyone uses them. ``CCSM_GGML_LIB`` names another build of the same ggml (a file
or its folder), e.g. one built without AVX-512 to run the suites on AVX2 kernels
(``make ggml-avx2``).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ccsm_core.errors import BackendUnavailable, CcsmError

from . import _ffi

PIN = "ggml-python==0.0.45"
_FIX = f"reinstall the plugin's pinned dependency: pip install --force-reinstall '{PIN}'"
LIB_ENV = "CCSM_GGML_LIB"  # another build of the pinned ggml: libggml-cpu's path or its folder


class GgmlError(CcsmError):
    """The GGML library reported a failure at run time."""


@dataclass(frozen=True)
class Ggml:
    """The loaded library: ``ffi`` and ``lib`` (cffi), where it came from, and its version."""

    ffi: Any
    lib: Any
    path: Path
    version: str
    tensor_overhead: int
    # True where ggml's half-precision dot products keep their partial sums in half precision
    # (x86 builds with AVX512-FP16, e.g. ``-march=native`` on Sapphire Rapids), found by a probe
    f16_accumulates_in_half: bool

    def features(self) -> tuple[str, ...]:
        """The SIMD features this build of ggml compiled in (``ggml_cpu_has_<name>``), upper case,
        plus ``AVX512_FP16`` where its half-precision products accumulate in half precision."""
        feats = [f.upper() for f in _ffi.FEATURES if getattr(self.lib, f"ggml_cpu_has_{f}")()]
        if self.f16_accumulates_in_half:
            feats.append("AVX512_FP16")
        return tuple(feats)

    def kernel_family(self) -> str:
        """Which family of ggml's CPU kernels runs here: ``avx512fp16``, ``avx512``, ``avx2``,
        ``avx``, ``sse``, ``neon`` or ``generic``. Results that depend on rounding (llama.cpp's
        recordings, tolerances) are the same within a family and move between families."""
        feats = self.features()
        if "NEON" in feats:
            return "neon"
        if "AVX512" in feats:
            return "avx512fp16" if self.f16_accumulates_in_half else "avx512"
        return next((f.lower().rstrip("3") for f in ("AVX2", "AVX", "SSE3") if f in feats), "generic")

    def repack_buffer_type(self) -> Any:
        """GGML's ``CPU_REPACK`` buffer type where it applies here (x86 with AVX2), else None."""
        ffi, lib = self.ffi, self.lib
        if not lib.ggml_cpu_has_avx2():
            return None
        reg = lib.ggml_backend_cpu_reg()
        fn = lib.ggml_backend_reg_get_proc_address(reg, b"ggml_backend_dev_get_extra_bufts")
        if fn == ffi.NULL:
            return None
        bufts = ffi.cast("ggml_backend_buffer_type_t * (*)(ggml_backend_dev_t)", fn)(
            lib.ggml_backend_reg_dev_get(reg, 0)
        )
        i = 0
        while bufts != ffi.NULL and bufts[i] != ffi.NULL:
            if ffi.string(lib.ggml_backend_buft_name(bufts[i])) == b"CPU_REPACK":
                return bufts[i]
            i += 1
        return None


def _f16_sums_in_half(ffi: Any, lib: Any, backend: Any) -> bool:
    """One half-precision product of 4096 terms, +1024 first, -1024 last and 0.01 between: about
    38 with float32 partial sums, 0 with half-precision ones (where 1024 + 0.01 == 1024)."""
    import numpy as np

    n = 4096
    w = np.full(n, 0.01, np.float16)
    w[:128], w[-128:] = 1024.0, -1024.0
    mem = 4 * int(lib.ggml_tensor_overhead()) + int(lib.ggml_graph_overhead_custom(16, False)) + 6 * n + 1024
    ctx = lib.ggml_init({"mem_size": mem, "mem_buffer": ffi.NULL, "no_alloc": False})
    if ctx == ffi.NULL:
        raise BackendUnavailable("ggml_init failed while probing the CPU kernels", "free some memory")
    try:
        a = lib.ggml_new_tensor_4d(ctx, _ffi.F16, n, 1, 1, 1)
        b = lib.ggml_new_tensor_4d(ctx, _ffi.F32, n, 1, 1, 1)
        ffi.memmove(lib.ggml_get_data(a), w.tobytes(), 2 * n)
        ffi.memmove(lib.ggml_get_data(b), np.ones(n, np.float32).tobytes(), 4 * n)
        y = lib.ggml_mul_mat(ctx, a, b)
        graph = lib.ggml_new_graph_custom(ctx, 16, False)
        lib.ggml_build_forward_expand(graph, y)
        if lib.ggml_backend_graph_compute(backend, graph) != 0:
            raise BackendUnavailable("ggml could not compute its kernel probe", _FIX)
        return float(ffi.cast("float *", lib.ggml_get_data(y))[0]) < 19.0
    finally:
        lib.ggml_free(ctx)


_lock = threading.Lock()
_loaded: Ggml | None = None
_failure: BackendUnavailable | None = None


def _lib_names() -> tuple[str, ...]:
    if sys.platform == "darwin":
        return ("libggml-cpu.dylib",)
    if sys.platform == "win32":
        return ("ggml-cpu.dll",)
    return ("libggml-cpu.so",)


def find_library() -> Path:
    """Path of the ggml CPU library: ``$CCSM_GGML_LIB`` if set, else the one inside the installed
    ``ggml-python`` package."""
    override = os.environ.get(LIB_ENV)
    if override:
        path = Path(override)
        for name in () if path.is_file() else _lib_names():
            path = path / name
        if not path.is_file():
            raise BackendUnavailable(
                f"{LIB_ENV}={override} names no ggml CPU library ({path} does not exist)",
                f"unset {LIB_ENV}, or point it at a folder holding {_lib_names()[0]} (make ggml-avx2 builds one)",
            )
        return path
    try:
        spec = importlib.util.find_spec("ggml")
    except (ImportError, ValueError) as e:
        spec = None
        cause = f" ({type(e).__name__}: {e})"
    else:
        cause = ""
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable(f"the Python package 'ggml' ({PIN}) is not installed{cause}", _FIX)
    looked = []
    for root in spec.submodule_search_locations:
        for name in _lib_names():
            candidate = Path(root) / "lib" / name
            looked.append(str(candidate))
            if candidate.is_file():
                return candidate
    raise BackendUnavailable(f"ggml CPU library not found; looked in: {', '.join(looked)}", _FIX)


def _smoke_test(ffi: Any, lib: Any, path: Path) -> tuple[str, int, bool]:
    """Check the declarations against the library on constants and a 2-element graph; then
    probe whether its F16 products keep half-precision sums. (version, tensor overhead, that)"""
    version = ffi.string(lib.ggml_version()).decode("ascii", "replace")
    if not version.startswith(_ffi.GGML_VERSION_PREFIX):
        raise BackendUnavailable(
            f"{path} is ggml {version}; ccsm-cpu declares the API of ggml {_ffi.GGML_VERSION_PREFIX}x", _FIX
        )
    for gtype, (blck, size) in _ffi.TYPE_BLOCKS.items():
        if lib.ggml_blck_size(gtype) != blck or lib.ggml_type_size(gtype) != size:
            raise BackendUnavailable(f"{path}: ggml type {gtype} has an unexpected block layout", _FIX)
    overhead = int(lib.ggml_tensor_overhead())
    if not 256 <= overhead <= 4096:
        raise BackendUnavailable(f"{path}: implausible ggml_tensor_overhead() = {overhead}", _FIX)
    mem = 8 * overhead + int(lib.ggml_graph_overhead_custom(16, False)) + 1024
    ctx = lib.ggml_init({"mem_size": mem, "mem_buffer": ffi.NULL, "no_alloc": False})
    if ctx == ffi.NULL or lib.ggml_get_mem_size(ctx) != mem:
        raise BackendUnavailable(f"{path}: ggml_init does not match our declaration", _FIX)
    backend = ffi.NULL
    try:
        a = lib.ggml_new_tensor_4d(ctx, _ffi.F32, 2, 1, 1, 1)
        b = lib.ggml_new_tensor_4d(ctx, _ffi.F32, 2, 1, 1, 1)
        y = lib.ggml_add(ctx, lib.ggml_scale(ctx, a, 2.0), b)
        if lib.ggml_nbytes(a) != 8:
            raise BackendUnavailable(f"{path}: ggml_nbytes does not match our declaration", _FIX)
        ffi.cast("float *", lib.ggml_get_data(a))[0:2] = [1.5, -2.0]
        ffi.cast("float *", lib.ggml_get_data(b))[0:2] = [0.25, 1.0]
        graph = lib.ggml_new_graph_custom(ctx, 16, False)
        lib.ggml_build_forward_expand(graph, y)
        backend = lib.ggml_backend_cpu_init()
        if backend == ffi.NULL:
            raise BackendUnavailable(f"{path}: ggml_backend_cpu_init returned NULL", _FIX)
        status = lib.ggml_backend_graph_compute(backend, graph)
        got = list(ffi.cast("float *", lib.ggml_get_data(y))[0:2])
        if status != 0 or got != [3.25, -3.0]:
            raise BackendUnavailable(f"{path}: smoke graph gave {got} (status {status}), expected [3.25, -3.0]", _FIX)
        half_sums = _f16_sums_in_half(ffi, lib, backend)
    finally:
        if backend != ffi.NULL:
            lib.ggml_backend_free(backend)
        lib.ggml_free(ctx)
    return version, overhead, half_sums


def load() -> Ggml:
    """The loaded, checked library (cached); `BackendUnavailable` says why it cannot be used."""
    global _loaded, _failure
    if _loaded is not None:
        return _loaded
    with _lock:
        if _loaded is not None:
            return _loaded
        if _failure is not None:
            raise _failure
        try:
            path = find_library()
            try:
                ffi = _ffi.make_ffi()
            except ImportError as e:
                raise BackendUnavailable(f"cffi is not importable: {e}", "pip install 'cffi>=1.16'") from e
            try:
                lib = ffi.dlopen(str(path))
            except OSError as e:
                raise BackendUnavailable(f"cannot open {path}: {e}", _FIX) from e
            try:
                version, overhead, half_sums = _smoke_test(ffi, lib, path)
            except AttributeError as e:  # a declared function is missing from the library
                raise BackendUnavailable(f"{path} lacks a function ccsm-cpu needs: {e}", _FIX) from e
        except BackendUnavailable as e:
            _failure = e
            raise
        _quiet_logs(ffi, lib)
        _loaded = Ggml(ffi, lib, path, version, overhead, half_sums)
        return _loaded


_log_callback: Any = None  # kept alive for as long as ggml may call it


def _quiet_logs(ffi: Any, lib: Any) -> None:
    """Send ggml's warnings and errors to stderr; drop its debug and info chatter."""
    global _log_callback

    def log(level: int, text: Any, _user: Any) -> None:
        if level >= _ffi.LOG_WARN and level != 5:
            sys.stderr.write("ggml: " + ffi.string(text).decode("utf-8", "replace"))

    _log_callback = ffi.callback("ggml_log_callback", log)
    lib.ggml_log_set(_log_callback, ffi.NULL)


def unavailable_reason() -> str | None:
    """``None`` if the library loads and passes its smoke test, else a one-line reason."""
    try:
        load()
    except BackendUnavailable as e:
        return e.one_line()
    return None


class Owned:
    """A C object freed by ``close()`` (idempotent); ``__del__`` only as a guarded fallback."""

    def __init__(self, handle: Any, free: Any) -> None:
        self.handle, self._free = handle, free

    def close(self) -> None:
        handle, self.handle = self.handle, None
        if handle is not None:
            self._free(handle)

    def __del__(self) -> None:  # interpreter shutdown may have torn the library down already
        try:
            self.close()
        except Exception:
            pass


class Context(Owned):
    """A ``ggml_context`` holding tensor metadata only (``no_alloc``) or metadata plus data."""

    def __init__(self, g: Ggml, mem_size: int, no_alloc: bool = True) -> None:
        handle = g.lib.ggml_init({"mem_size": int(mem_size), "mem_buffer": g.ffi.NULL, "no_alloc": no_alloc})
        if handle == g.ffi.NULL:
            raise GgmlError(f"ggml_init could not allocate {mem_size} bytes", "free some memory")
        super().__init__(handle, g.lib.ggml_free)
        self.mem_size = int(mem_size)


def check_status(g: Ggml, status: int, what: str) -> None:
    """Map a ``ggml_status`` to `GgmlError`."""
    if status != 0:
        text = g.ffi.string(g.lib.ggml_status_to_string(status)).decode("ascii", "replace")
        raise GgmlError(
            f"{what} failed: {text} (status {status})",
            "free memory or lower the sequence length" if status == -2 else "report this as a bug",
        )
