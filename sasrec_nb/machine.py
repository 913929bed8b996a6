"""Where a measurement ran: the CPU, its instruction sets, the libraries, the threads and the command line.

Every script that writes a results or benchmark JSON records :func:`machine_info`: float results of training differ
between CPUs (and thread counts), and int8 speed and exactness depend on the instruction sets (VNNI, AMX, AVX-512).
"""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import torch

ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")


def _cpuinfo(key: str) -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The ``model name`` line of /proc/cpuinfo (the processor where that file is missing)."""
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def isa_flags() -> dict:
    """The x86 extensions that decide int8 speed and exactness (from /proc/cpuinfo; empty elsewhere) and PyTorch's
    own reading of the CPU."""
    flags = set((_cpuinfo("flags") or "").split())
    return {"flags": {f: f in flags for f in ISA_FLAGS},
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability()}


def machine_info(threads: int | None = None) -> dict:
    """Platform, CPU and its instruction sets, library versions, threads, load and command line."""
    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = None
    return {
        "platform": platform.platform(), "cpu": cpu_model(), "isa": isa_flags(), "cpu_count": os.cpu_count(),
        "python": platform.python_version(), "torch": torch.__version__, "onnxruntime": ort_version,
        "threads": threads if threads is not None else torch.get_num_threads(),
        "load_average_1_5_15": list(os.getloadavg()),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
