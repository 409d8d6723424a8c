"""Mat-vec for decoding: one token's products ``x @ W.T`` as a small native kernel on a transposed weight.

Decoding one token multiplies one row by every weight matrix once: ~21 MB of float32 weights streamed per
token for the shipped decoder (4 layers × QKV, output, gate, up, down, plus the 256 → 8000 head), a few FLOPs
per byte. What wins is streaming the weight at the cache's bandwidth, with nothing else in the way.

``matvec_kernel.h`` does only that. The weight is stored transposed, ``(in, out)`` row-major. A block of 128
consecutive outputs keeps eight 16-lane accumulators in registers; each step over the input reads 128
contiguous weights of row ``i`` (512 bytes, two cache lines per accumulator), broadcasts ``x[i]`` and
multiplies-adds. The weight is read once, front to back, and the eight accumulator chains are independent, so
the adds never wait on each other. For ``R`` ≤ 8 rows (a few sequences in lock step) each weight run is
loaded once and used for every row. int8 weights (``modeling.quantization.quantize_rows``) are widened to
float in registers (sign-extend, convert) and each output is scaled once at the end: a quarter of the bytes.

Measured on this machine (AMD EPYC, AVX-512, 1 thread; all 17 products of one token, weights warm in L2/L3,
ms per token): MKL's ``x @ W_t`` 0.50–0.56 (PyTorch's eager path), this kernel 0.29 fp32, 0.11–0.12 int8;
17 empty op calls cost 0.012. MKL's single-row ``sgemv`` is tuned for large matrices from memory and pays
setup and threading checks per call; TorchInductor emits ``(x[:, None] * W).sum(-1)`` as a per-output
reduction loop whose one accumulator chain waits on every add.

The sum over ``i`` runs in order, with fused multiply-adds: other products (MKL, oneDNN) add in another order,
so outputs differ in the last bits; greedy ids stay the same (tests/modeling, bench/decoding.py).

Threads: ATen's pool (``at::parallel_for``: ``torch.set_num_threads``, inline at one thread) splits a
product's outputs in units of 16 and the attention's (row, head) pairs, where a thread's share is at least
~1M multiply-adds (for one row only the 256 → 8000 head splits: a hand-off costs a few µs, 15–40 µs where
another OpenMP runtime shares the process). Each output is the same in-order sum whichever thread computes it,
so the products are bitwise those of one thread. Built with ``-fopenmp``, bound to the OpenMP runtime PyTorch
already loaded; one thread is as fast as before.

The library holds one more kernel of the compiled decode step, ``attend_one(q, k, v, mask, scale)``: one
query's attention over a row's cached keys (``attention_kernel.h``; why: ``modeling.decode_step``).

The ops are ``torch.ops.atencion.matvec(x, weight_t, bias)`` and ``matvec_int8(x, weight_t, scale, bias)``,
registered with the dispatcher (``TORCH_LIBRARY``, ~µs per call) with fake implementations, so eager code
calls them and ``torch.compile`` graphs call them as extern kernels. The library is compiled from
``matvec.cpp`` on first use with the system C++ compiler (~10 s) and kept on disk, named by a hash of the
sources, the torch version, the compiler and the machine architecture, under ``$ATENCION_KERNEL_CACHE``
(default ``~/.cache/atencion/kernels``): a restart loads it without compiling. The loop is compiled for
AVX-512, AVX2 and the baseline instruction set and the CPU picks one at load, so one build serves any x86-64
CPU (a Docker image builds it once, ahead of time). Without a compiler, or if the build fails, ``unavailable``
says why (one log line) and the callers keep PyTorch's products.

    python -m modeling.matvec      # build (or find) the library now; print where it is and what it runs
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
from torch import Tensor

log = logging.getLogger(__name__)
HERE = Path(__file__).resolve().parent
SOURCES = (HERE / "matvec.cpp", HERE / "matvec_kernel.h", HERE / "attention_kernel.h")
COMPILER = "g++"  # resolved on PATH; tests point it elsewhere to see the fallback
FLAGS = ["-O3", "-std=gnu++20", "-fPIC", "-shared", "-fopenmp", "-Wno-psabi", "-w"]

_state: dict[str, str | None] = {}  # "reason": None once loaded, else why not; empty until first asked


def cache_dir() -> Path:
    if os.environ.get("ATENCION_KERNEL_CACHE"):
        return Path(os.environ["ATENCION_KERNEL_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "atencion" / "kernels"


def library_path() -> Path:
    """The library's file: named by everything that changes what it contains."""
    digest = hashlib.sha256()
    for source in SOURCES:
        digest.update(source.read_bytes())
    digest.update(f"{torch.__version__} {platform.machine()} {COMPILER} {FLAGS}".encode())
    return cache_dir() / f"matvec-{digest.hexdigest()[:16]}.so"


def build(path: Path) -> None:
    """Compile ``matvec.cpp`` into ``path`` (atomically: concurrent builders each write their own file)."""
    from torch.utils.cpp_extension import include_paths, library_paths

    compiler = shutil.which(COMPILER)
    if compiler is None:
        raise RuntimeError(f"no C++ compiler ({COMPILER}) on PATH")
    path.parent.mkdir(parents=True, exist_ok=True)
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        out = Path(tmp) / path.name
        command = [compiler, *FLAGS, f"-D_GLIBCXX_USE_CXX11_ABI={abi}", str(SOURCES[0]), "-o", str(out)]
        command += [f"-I{p}" for p in include_paths()] + [f"-L{p}" for p in library_paths()]
        command += ["-ltorch", "-ltorch_cpu", "-lc10"]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{COMPILER} failed: {done.stderr.strip()[-500:]}")
        os.replace(out, path)


def unavailable() -> str | None:
    """Why the kernels cannot run here, or None once they are loaded (built on the first call if needed)."""
    if "reason" not in _state:
        try:
            path = library_path()
            if not path.exists():
                build(path)
            torch.ops.load_library(str(path))
            _register_fakes()
            _state["reason"] = None
        except Exception as error:  # no compiler, a failed build, an unloadable file: PyTorch's products
            _state["reason"] = f"mat-vec kernels unavailable: {error}".splitlines()[0]
            log.warning("%s; one-row products use PyTorch's", _state["reason"])
    return _state["reason"]


def probe() -> str | None:
    """``unavailable``'s answer where it is known without building: in this process, or on disk; else None
    when a compiler is there to build the library (for a process that reports but does not decode)."""
    if "reason" in _state:
        return _state["reason"]
    if library_path().exists() or shutil.which(COMPILER) is not None:
        return None
    return f"mat-vec kernels unavailable: no C++ compiler ({COMPILER}) on PATH"


def available() -> bool:
    return unavailable() is None


def isa() -> str:
    """The instruction set the loaded kernels run ("avx512", "avx2" or "generic")."""
    return torch.ops.atencion.matvec_isa()


def _register_fakes() -> None:
    """Output shapes for tracing (``torch.compile``): ``x (…, in)`` → ``(…, out)``."""
    if getattr(torch.ops.atencion.matvec, "_atencion_fake", False):
        return

    def fake(x: Tensor, weight_t: Tensor, *rest) -> Tensor:
        return x.new_empty((*x.shape[:-1], weight_t.shape[1]))

    def fake_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, scale: float) -> Tensor:
        return q.new_empty(q.shape)  # (B, H, 1, D)

    torch.library.register_fake("atencion::matvec")(fake)
    torch.library.register_fake("atencion::matvec_int8")(fake)
    torch.library.register_fake("atencion::attend_one")(fake_attention)
    torch.ops.atencion.matvec._atencion_fake = True


def matvec(x: Tensor, weight_t: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x (…, in)`` float32 @ ``weight_t (in, out)`` float32 (+ ``bias (out,)``) → ``(…, out)``."""
    return torch.ops.atencion.matvec(x, weight_t, bias)


def matvec_int8(x: Tensor, weight_t: Tensor, scale: Tensor, bias: Tensor | None = None) -> Tensor:
    """``(x @ weight_t) · scale (+ bias)`` with ``weight_t (in, out)`` int8 and ``scale (out,)`` float32."""
    return torch.ops.atencion.matvec_int8(x, weight_t, scale, bias)


if __name__ == "__main__":
    reason = unavailable()
    print(reason or f"{library_path()} ({isa()})")
    raise SystemExit(1 if reason else 0)
