"""The per-edge rotations of an eager CPU call: torch.bmm against the C kernels
of :mod:`umadrive.model.edge_products`, on UMA-S's shapes.

    python benchmarks/edge_products.py [--edges 8424] [--threads 1 2] [--repeats 15]
        [--checkpoint /tmp/uma-s-1p2p1-random.pt --calls 5]

The rotations are the model's own (:class:`~umadrive.model.so3.EdgeRotation`,
lmax = mmax = 2: 9 x 9, block diagonal by degree) of random edge directions, in
float32; the features (E, 9, C) for C = 256 (the source and centre features of
UMA-S, rotated into the edge frame) and C = 128 (the messages, rotated back).
Per C, the three products of one rotation in a forces call: the forward product,
the backward product for the features (the transposed matrices times the
gradient) and the one for the matrices (the gradient times the features,
transposed). Both sides keep freed memory for reuse, as ``umadrive serve``
does (otherwise every fresh output of tens of MB is faulted in page by page,
which dominates both); they take turns, median of ``--repeats``. 8,424 edges
are those of the 108-atom Cu of ``benchmarks/model_vs_oracle.py``.

With ``--checkpoint``, also whole default-mode calls (energy, forces and stress
of that 108-atom Cu, the model in float32) with the kernels and with
``torch.bmm`` (:func:`umadrive.model.edge_products.disabled`), taking turns,
``--calls`` each after a warm-up, median. Prints markdown tables and writes
benchmarks/out/edge_products.json.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import write_results  # noqa: E402
from benchmarks.model_vs_oracle import make_system, our_unit  # noqa: E402
from umadrive.model import edge_products  # noqa: E402
from umadrive.model.so3 import CoefficientLayout, EdgeRotation  # noqa: E402
from umadrive.process_memory import keep_freed_memory  # noqa: E402


def products(m: torch.Tensor, x: torch.Tensor, g: torch.Tensor):
    """(label, bmm call, kernel call) for the three products of one rotation."""
    mt = m.transpose(1, 2)
    return [("forward: m @ x", lambda: torch.bmm(m, x), lambda: edge_products.apply(m, x)),
            ("backward: m^T @ g", lambda: torch.bmm(mt, g), lambda: edge_products.apply(mt, g)),
            ("backward: g @ x^T", lambda: torch.bmm(g, x.transpose(1, 2)),
             lambda: edge_products.outer(g, x))]


def timed_ms(function) -> float:
    start = time.perf_counter()
    function()
    return 1e3 * (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--edges", type=int, default=8424)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--checkpoint", type=Path,
                        help="also time whole default-mode calls of this checkpoint")
    parser.add_argument("--calls", type=int, default=5)
    args = parser.parse_args()
    if not edge_products.available():
        sys.exit("the C kernels could not be built here (see the log): nothing to compare")
    keep_freed_memory()
    generator = torch.Generator().manual_seed(0)
    directions = torch.randn(args.edges, 3, generator=generator, dtype=torch.float64)
    m = EdgeRotation(CoefficientLayout(2, 2), torch.float64)(directions).float().contiguous()
    table = [f"{args.edges} edges, 9 x 9 rotations, float32; median of {args.repeats} "
             "(ms)", "",
             "| threads | channels | product | torch.bmm ms | C kernel ms | bmm / kernel |",
             "|---:|---:|---|---:|---:|---:|"]
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for channels in (256, 128):
            x = torch.randn(args.edges, 9, channels, generator=generator)
            g = torch.randn(args.edges, 9, channels, generator=generator)
            for label, with_bmm, with_kernel in products(m, x, g):
                # float32 sums of up to 256 products, added in another order
                torch.testing.assert_close(with_kernel(), with_bmm(), rtol=1e-5, atol=1e-4)
                bmm_times, kernel_times = [], []
                for _ in range(args.repeats):  # turns: load from elsewhere hits both
                    with_bmm(), with_kernel()  # outputs of the same size freed just before
                    bmm_times.append(timed_ms(with_bmm))
                    kernel_times.append(timed_ms(with_kernel))
                bmm_ms, kernel_ms = statistics.median(bmm_times), statistics.median(kernel_times)
                rows.append({"threads": threads, "channels": channels, "product": label,
                             "bmm_ms": bmm_ms, "kernel_ms": kernel_ms})
                table.append(f"| {threads} | {channels} | {label} | {bmm_ms:.1f} | "
                             f"{kernel_ms:.1f} | {bmm_ms / kernel_ms:.2f} |")
    calls = whole_calls(args, table) if args.checkpoint else []
    write_results("edge_products", table, {"edges": args.edges, "rows": rows,
                                           "calls": calls})


def whole_calls(args, table: list[str]) -> list[dict]:
    """Default-mode calls with the kernels and with torch.bmm, in turns."""
    unit, system = our_unit(args.checkpoint, dict(activation_checkpointing=True,
                                                  merge_mole=False, compile=False),
                            make_system("cu108"))
    table += ["", f"Default mode, 108-atom Cu, {args.checkpoint.name}, median of "
              f"{args.calls} calls (s)", "",
              "| threads | with torch.bmm s | with the C kernels s | ratio |",
              "|---:|---:|---:|---:|"]
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        times = {"bmm": [], "kernels": []}
        answers = {}
        for call in range(args.calls + 1):
            for side in times:
                with contextlib.ExitStack() as stack:
                    if side == "bmm":
                        stack.enter_context(edge_products.disabled())
                    start = time.perf_counter()
                    answers[side] = unit.predict([system])[0]
                    if call:  # the first is a warm-up
                        times[side].append(time.perf_counter() - start)
        if abs(answers["bmm"].energy - answers["kernels"].energy) > 1e-3:
            raise RuntimeError(f"the two sides disagree: {answers}")
        bmm_s, kernel_s = statistics.median(times["bmm"]), statistics.median(times["kernels"])
        rows.append({"threads": threads, "bmm_s": times["bmm"], "kernels_s": times["kernels"],
                     "max_force_difference": float(abs(answers["bmm"].forces
                                                       - answers["kernels"].forces).max())})
        table.append(f"| {threads} | {bmm_s:.3f} | {kernel_s:.3f} | {bmm_s / kernel_s:.2f} |")
    return rows


if __name__ == "__main__":
    main()
