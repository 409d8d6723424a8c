"""The mat-vec kernels: the products of ``F.linear`` and of the int8 reference for the shipped decoder's shapes
and odd ones (every row-group and tail path), the one-query attention against SDPA, on every instruction set
this CPU has, inside ``torch.compile``, the on-disk cache, and PyTorch's products where the library cannot be
built.

Tolerances: the kernels add the ``in`` products in order with fused multiply-adds, PyTorch in another order, so
float32 sums of a few hundred unit-scale products differ by ~1e-5; 1e-4 absolute and relative covers that
and still catches a wrong or missing term (of order 1).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from modeling import matvec
from modeling.decode_step import CompiledDecoder
from modeling.projection import Projection
from modeling.quantization import Int8Linear, quantize_rows

REPO = Path(__file__).resolve().parents[2]
SHIPPED = [(256, 768), (256, 256), (256, 704), (704, 256), (256, 8000)]  # (in, out)
ODD = [(37, 100), (16, 15), (1, 1), (300, 129), (17, 257)]  # tails, single blocks, in not a multiple of 16
TOL = {"atol": 1e-4, "rtol": 1e-4}

needs_kernels = pytest.mark.skipif(not matvec.available(), reason=f"{matvec.unavailable()}")


def case(shape: tuple[int, int], rows: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n_in, n_out = shape
    return (
        torch.randn(rows, n_in, generator=g),
        torch.randn(n_out, n_in, generator=g) / n_in**0.5,
        torch.randn(n_out, generator=g),
    )


@needs_kernels
@pytest.mark.parametrize("shape", SHIPPED + ODD, ids=str)
@pytest.mark.parametrize("rows", [1, 2, 3, 5, 8, 13])  # groups of 8, 4, 2, 1
def test_float_matvec_is_f_linear(shape, rows) -> None:
    x, w, bias = case(shape, rows)
    weight_t = w.t().contiguous()  # (in, out)
    torch.testing.assert_close(matvec.matvec(x, weight_t), F.linear(x, w), **TOL)
    torch.testing.assert_close(matvec.matvec(x, weight_t, bias), F.linear(x, w, bias), **TOL)


@needs_kernels
@pytest.mark.parametrize("shape", SHIPPED + ODD, ids=str)
@pytest.mark.parametrize("rows", [1, 3, 8, 13])
def test_int8_matvec_is_the_dequantized_product(shape, rows) -> None:
    x, w, bias = case(shape, rows)
    q, scale = quantize_rows(w)  # (out, in) int8, (out,)
    reference = F.linear(x, q.float()) * scale + bias
    got = matvec.matvec_int8(x, q.t().contiguous(), scale, bias)
    torch.testing.assert_close(got, reference, **TOL)


@needs_kernels
def test_leading_dimensions_and_views_keep_their_shape() -> None:
    x, w, _ = case((40, 33), 6)
    x = x.view(2, 3, 40)[:, :, :32]  # (2, 3, 32), not contiguous
    w = w[:, :32]
    got = matvec.matvec(x, w.t().contiguous())
    assert got.shape == (2, 3, 33)
    torch.testing.assert_close(got, F.linear(x, w), **TOL)


@needs_kernels
def test_wrong_inputs_are_clear_errors() -> None:
    x, w, _ = case((8, 4), 1)
    with pytest.raises(RuntimeError, match="does not match weight_t"):
        matvec.matvec(x, w.contiguous())  # (out, in) given where (in, out) is expected
    with pytest.raises(RuntimeError, match="x must be float32"):
        matvec.matvec(x.double(), w.t().contiguous())
    with pytest.raises(RuntimeError, match="weight_t must be Char"):
        matvec.matvec_int8(x, w.t().contiguous(), torch.ones(4))


@needs_kernels
@pytest.mark.skipif(not hasattr(os, "fork"), reason="runs the generic and AVX2 paths in subprocesses")
def test_narrower_instruction_sets_give_the_same_products() -> None:
    """ATENCION_MATVEC_ISA forces a narrower path (AVX2; the compiler's baseline vectors): same products."""
    script = (
        "import torch, torch.nn.functional as F; from modeling import matvec; from modeling.quantization import "
        "quantize_rows\nassert matvec.available()\nfor rows in (1, 3, 8):\n for n_in, n_out in [(256, 768), (37, 100), (704, 256)]:\n"
        "  x, w = torch.randn(rows, n_in), torch.randn(n_out, n_in) / n_in ** 0.5; q, s = quantize_rows(w)\n"
        "  torch.testing.assert_close(matvec.matvec(x, w.t().contiguous()), F.linear(x, w), atol=1e-4, rtol=1e-4)\n"
        "  torch.testing.assert_close(matvec.matvec_int8(x, q.t().contiguous(), s), F.linear(x, q.float()) * s,"
        " atol=1e-4, rtol=1e-4)\n"
        "q, k = torch.randn(2, 3, 1, 64), torch.randn(2, 3, 77, 64); m = torch.zeros(1, 1, 1, 77); m[..., 50:] = -1e9\n"
        "torch.testing.assert_close(torch.ops.atencion.attend_one(q, k, k * 2, m, 0.125),"
        " F.scaled_dot_product_attention(q, k, k * 2, attn_mask=m, scale=0.125), atol=1e-5, rtol=1e-5)\n"
        "print(matvec.isa())"
    )
    widest = matvec.isa()
    for isa in ("generic", "avx2"):
        env = {**os.environ, "ATENCION_MATVEC_ISA": isa, "PYTHONPATH": str(REPO)}
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        expected = isa if widest != "generic" else "generic"
        assert done.stdout.strip() == expected


@needs_kernels
@pytest.mark.parametrize(("S", "D"), [(128, 64), (37, 16), (300, 32)])
@pytest.mark.parametrize("mask", ["none", "shared", "per-row"])
def test_one_query_attention_is_sdpa(S, D, mask) -> None:
    """Keys and values as a cache's span (rows of a longer storage), masked columns at -inf; 1e-5: another
    order of the sums and another exp."""
    g = torch.Generator().manual_seed(S)
    B, H = 2, 3
    q = torch.randn(B, H, 1, D, generator=g)
    k, v = (torch.randn(B, H, S + 50, D, generator=g)[:, :, :S] for _ in range(2))  # (B, H, S, D), strided
    lengths = torch.tensor([S // 3, S])[:, None, None, None]  # (B, 1, 1, 1): row 0 sees its first third
    masks = {
        "none": None,
        "shared": torch.zeros(1, 1, 1, S),
        "per-row": torch.where(torch.arange(S) < lengths, 0.0, float("-inf")),  # (B, 1, 1, S)
    }
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=masks[mask], scale=0.3)
    got = torch.ops.atencion.attend_one(q, k, v, masks[mask], 0.3)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@needs_kernels
@pytest.mark.parametrize("shape", [*SHIPPED, (1000, 1000), (4099, 1000), (300, 129)], ids=str)
@pytest.mark.parametrize("rows", [1, 3, 13])
def test_two_threads_give_bitwise_the_one_thread_products(shape, rows) -> None:
    """Threads split the outputs in units of 16 (each output the same in-order sum), the attention by (row,
    head) pairs: the same bits at any thread count, tails and split blocks included."""
    x, w, bias = case(shape, rows)
    q8, s8 = quantize_rows(w)
    g = torch.Generator().manual_seed(rows)
    S = 80 + rows
    q, k, v = torch.randn(32, 4, 1, 64, generator=g), *torch.randn(2, 32, 4, S, 64, generator=g)
    mask = torch.where(torch.arange(S) < torch.arange(32)[:, None, None, None] + 50, 0.0, float("-inf"))

    def products() -> list[torch.Tensor]:
        return [
            matvec.matvec(x, w.t().contiguous(), bias),
            matvec.matvec_int8(x, q8.t().contiguous(), s8),
            torch.ops.atencion.attend_one(q, k, v, mask, 0.125),  # (32, 4, 1, 64)
        ]

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = products()
        torch.set_num_threads(2)
        two = products()
    finally:
        torch.set_num_threads(before)
    for a, b in zip(one, two, strict=True):
        assert torch.equal(a, b)


@needs_kernels
def test_one_query_attention_refuses_what_it_does_not_do() -> None:
    q, k = torch.randn(1, 2, 1, 24), torch.randn(1, 2, 9, 24)
    with pytest.raises(RuntimeError, match="multiple of 16"):
        torch.ops.atencion.attend_one(q, k, k, None, 1.0)
    with pytest.raises(RuntimeError, match=r"q must be \(B, H, 1, D\)"):
        torch.ops.atencion.attend_one(k, k, k, None, 1.0)


@needs_kernels
def test_compiled_graphs_call_the_ops() -> None:
    x, w, bias = case((256, 768), 1)
    q, scale = quantize_rows(w)
    weight_t, q_t = w.t().contiguous(), q.t().contiguous()

    def both(x):
        return matvec.matvec(x, weight_t, bias).relu(), matvec.matvec_int8(x, q_t, scale)

    compiled = torch.compile(both, fullgraph=True, dynamic=False)
    for a, b in zip(compiled(x), both(x), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


@needs_kernels
def test_projection_and_int8_linear_take_the_kernel_for_one_row() -> None:
    torch.manual_seed(0)
    projection = Projection(256, 700).eval()
    x = torch.randn(1, 1, 256)
    with torch.no_grad():
        torch.testing.assert_close(projection(x), F.linear(x, projection.weight, projection.bias), **TOL)
        projection.weight.mul_(2)  # an in-place update: the transposed copy is rebuilt
        torch.testing.assert_close(projection(x), F.linear(x, projection.weight, projection.bias), **TOL)
        int8 = Int8Linear(projection)
        reference = F.linear(x, int8.weight.float()) * int8.scale + int8.bias
        torch.testing.assert_close(int8(x), reference, **TOL)
        torch.testing.assert_close(int8(x.expand(1, 4, 256)), reference.expand(1, 4, 700), **TOL)  # 4 rows


def test_the_library_is_cached_on_disk_and_a_new_process_loads_it_without_building(tmp_path) -> None:
    if not matvec.available():
        pytest.skip(f"{matvec.unavailable()}")
    library = matvec.library_path()
    assert library.exists() and library.parent == matvec.cache_dir()
    built = library.stat().st_mtime_ns
    env = {**os.environ, "PYTHONPATH": str(REPO), "PATH": str(tmp_path)}  # no compiler on PATH
    done = subprocess.run([sys.executable, "-m", "modeling.matvec"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(str(library)) and library.stat().st_mtime_ns == built


def test_without_a_compiler_the_products_are_pytorchs_and_the_step_says_so(
    monkeypatch, tmp_path, caplog
) -> None:
    monkeypatch.setattr(matvec, "_state", {})  # as in a fresh process
    monkeypatch.setattr(matvec, "COMPILER", "no-such-compiler")
    monkeypatch.setenv("ATENCION_KERNEL_CACHE", str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="modeling.matvec"):
        assert (
            matvec.unavailable() == "mat-vec kernels unavailable: no C++ compiler (no-such-compiler) on PATH"
        )
        matvec.unavailable()  # asked again: answered from memory, logged once
    assert len(caplog.records) == 1
    torch.manual_seed(0)
    projection = Projection(32, 48).eval()
    x = torch.randn(1, 32)
    with torch.no_grad():
        torch.testing.assert_close(projection(x), F.linear(x, projection.weight, projection.bias), **TOL)
        int8 = Int8Linear(projection)
        torch.testing.assert_close(int8(x), F.linear(x, int8.weight.float()) * int8.scale + int8.bias, **TOL)
    step = CompiledDecoder(_tiny_decoder(), compile=False)
    assert step.mode == (
        "eager (compilation not asked for); mat-vec kernels unavailable: no C++ compiler (no-such-compiler) on PATH"
    )
    assert not list(tmp_path.iterdir())


def test_a_failing_build_is_reported_not_raised(monkeypatch, tmp_path) -> None:
    broken = tmp_path / "matvec.cpp"
    broken.write_text("this is not C++\n")
    monkeypatch.setattr(matvec, "_state", {})
    monkeypatch.setattr(matvec, "SOURCES", (broken,))
    monkeypatch.setenv("ATENCION_KERNEL_CACHE", str(tmp_path / "cache"))
    reason = matvec.unavailable()
    if matvec.shutil.which(matvec.COMPILER) is None:
        assert "no C++ compiler" in reason
    else:
        assert reason.startswith("mat-vec kernels unavailable: g++ failed")
    assert not list((tmp_path / "cache").glob("*.so"))


def _tiny_decoder():
    from modeling.config import DecoderConfig
    from modeling.decoder import Decoder

    config = DecoderConfig(vocab_size=61, d_model=32, n_layers=1, n_heads=2, d_ff=48, max_len=64, dropout=0.0)
    return Decoder(config).eval()


def test_the_installed_package_ships_the_kernel_sources() -> None:
    """A wheel or the Docker image builds the library from the installed files: every source is package data."""
    import tomllib

    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert {source.name for source in matvec.SOURCES} <= set(data["modeling"])
