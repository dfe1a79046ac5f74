"""The C per-edge products (umadrive.model.edge_products) against their
definitions (a product per edge in float64), on both dtypes, odd shapes, strided
inputs and any thread count; their derivatives through rotate_edges by finite
differences; and the fall-back to torch.bmm without a compiler."""

import logging

import pytest
import torch

from umadrive.model import edge_products
from umadrive.model.edge_ops import rotate_edges

pytestmark = pytest.mark.skipif(not edge_products.available(),
                                reason="no C compiler for the per-edge kernels")

SHAPES = [(17, 9, 9, 256), (5, 3, 4, 7), (1, 1, 1, 1), (0, 9, 9, 8), (6, 2, 0, 5)]


def random(shape, dtype, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("edges, rows, inner, channels", SHAPES)
def test_products_are_each_edges_matrix_products(dtype, edges, rows, inner, channels):
    m = random((edges, rows, inner), dtype, 0)
    m[:, :, ::2] = 0  # zero entries are skipped: the sums must not change
    x = random((edges, inner, channels), dtype, 1)
    g = random((edges, rows, channels), dtype, 2)
    exact = torch.float64
    expected_apply = torch.stack([m[e].to(exact) @ x[e].to(exact) for e in range(edges)]) \
        if edges else torch.zeros(0, rows, channels, dtype=exact)
    expected_outer = torch.stack([g[e].to(exact) @ x[e].to(exact).T for e in range(edges)]) \
        if edges else torch.zeros(0, rows, inner, dtype=exact)
    for value, expected in ((edge_products.apply(m, x), expected_apply),
                            (edge_products.outer(g, x), expected_outer)):
        assert value.dtype == dtype and value.shape == expected.shape
        # torch's tolerances for the dtype, against the float64 product rounded to it
        torch.testing.assert_close(value, expected.to(dtype))


def test_strided_inputs_and_the_thread_count_do_not_change_the_result():
    m = random((40, 9, 9), torch.float32, 3)
    x = random((40, 16, 9), torch.float32, 4).transpose(1, 2)  # (40, 9, 16), not contiguous
    threads = torch.get_num_threads()
    try:
        results = []
        for count in (1, 3, 64):
            torch.set_num_threads(count)
            results.append((edge_products.apply(m, x), edge_products.outer(x, x)))
    finally:
        torch.set_num_threads(threads)
    for apply_value, outer_value in results[1:]:
        assert torch.equal(apply_value, results[0][0]) and torch.equal(outer_value, results[0][1])
    torch.testing.assert_close(results[0][0], torch.bmm(m, x.contiguous()))


def test_rotate_edges_first_and_second_derivatives_through_the_kernels():
    rotations = random((6, 4, 3), torch.float64, 5).requires_grad_()
    features = random((6, 3, 5), torch.float64, 6).requires_grad_()
    assert torch.autograd.gradcheck(rotate_edges, (rotations, features))
    assert torch.autograd.gradgradcheck(rotate_edges, (rotations, features))


def test_disabled_kernels_leave_the_products_to_bmm():
    m, x = random((5, 3, 3), torch.float64, 9), random((5, 3, 2), torch.float64, 10)
    with edge_products.disabled():
        assert not edge_products.available()
        assert torch.equal(rotate_edges(m, x), torch.bmm(m, x))
    assert edge_products.available()


def test_without_a_compiler_rotate_edges_falls_back_to_bmm(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(edge_products, "_tried", False)
    monkeypatch.setattr(edge_products, "_library", None)
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("UMADRIVE_CACHE", str(tmp_path))
    with caplog.at_level(logging.INFO, logger="umadrive.model.edge_products"):
        assert not edge_products.available()
    assert "no C compiler" in caplog.text and "torch.bmm" in caplog.text
    assert edge_products.describe().startswith("no C compiler")
    m, x = random((5, 3, 3), torch.float64, 7), random((5, 3, 2), torch.float64, 8)
    assert torch.equal(rotate_edges(m, x), torch.bmm(m, x))


def test_a_compiler_that_fails_is_reported_and_bmm_used(monkeypatch, tmp_path, caplog):
    failing = tmp_path / "failing-cc"
    failing.write_text("#!/bin/sh\n[ \"$1\" = --version ] && exit 0\necho broken >&2\nexit 3\n")
    failing.chmod(0o755)
    monkeypatch.setattr(edge_products, "_tried", False)
    monkeypatch.setattr(edge_products, "_library", None)
    monkeypatch.setenv("CC", str(failing))
    monkeypatch.setenv("UMADRIVE_CACHE", str(tmp_path))
    with caplog.at_level(logging.WARNING, logger="umadrive.model.edge_products"):
        assert not edge_products.available()
    assert "exited with 3: broken" in caplog.text
    assert edge_products.describe().startswith("could not be built")
    assert list((tmp_path / "kernels").iterdir()) == []  # no half-written library left


def test_the_library_is_compiled_once_into_the_cache(monkeypatch, tmp_path):
    monkeypatch.setattr(edge_products, "_tried", False)
    monkeypatch.setattr(edge_products, "_library", None)
    monkeypatch.setenv("UMADRIVE_CACHE", str(tmp_path))
    assert edge_products.available()
    (built,) = (tmp_path / "kernels").iterdir()
    assert edge_products.describe().endswith(str(built))
    assert built.name.startswith("edge_products-") and built.suffix == ".so"
    stamp = built.stat().st_mtime_ns
    monkeypatch.setattr(edge_products, "_tried", False)
    assert edge_products.available() and built.stat().st_mtime_ns == stamp


def test_loading_a_model_for_a_cpu_builds_the_kernels_meanwhile(monkeypatch, tmp_path):
    from umadrive.model import get_predict_unit
    from tests.model.helpers import checkpoint_path

    monkeypatch.setattr(edge_products, "_tried", False)
    monkeypatch.setattr(edge_products, "_library", None)
    monkeypatch.setenv("UMADRIVE_CACHE", str(tmp_path))
    started = []
    monkeypatch.setattr(edge_products, "prepare",
                        lambda prepare=edge_products.prepare: started.append(prepare()))
    get_predict_unit(checkpoint_path("s1p1"))
    (thread,) = started
    thread.join()
    assert edge_products._tried and (tmp_path / "kernels").is_dir()
    assert edge_products.prepare() is None  # nothing left to do
