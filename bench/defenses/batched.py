"""Batch-size-independent numerics shared by the NE bases (bench.defenses.operator_basis, operator_fourier):
a matmul whose bits do not depend on how many rows a batch has, and fitted tensors cached per device."""

from __future__ import annotations

from contextlib import contextmanager

import torch

# rows per product in rows_matmul: every product has this shape, whatever the batch
ROW_CHUNK = 64


def rows_matmul(a: torch.Tensor, b: torch.Tensor, chunk: int = ROW_CHUNK) -> torch.Tensor:
    """a @ b for a (R, k) and b (k, n), each row's result independent of R and of the other rows.

    BLAS picks kernels, and with them the summation order, by matrix shape and alignment: one mm
    over all rows gives a sample other bits in a batch of 1 than in a batch of 256. Here the rows
    are copied into a fresh zero-padded (chunks, chunk, k) buffer and multiplied in one batched
    matmul in which every product has the same shape and alignment (bitwise batch-independent on
    the CPU; on a GPU it keeps the kernel choice fixed too)."""
    r, k = a.shape
    n_chunks = -(-r // chunk)
    if n_chunks == 0:
        return a.new_zeros(0, b.shape[1])
    buf = a.new_zeros(n_chunks * chunk, k)
    buf[:r] = a
    out = torch.bmm(buf.view(n_chunks, chunk, k), b.expand(n_chunks, *b.shape))
    return out.view(n_chunks * chunk, -1)[:r]


class PerDevice:
    """Tensors of a fitted state, kept on the CPU, with a copy cached on each device asked for."""

    def __init__(self, **tensors: torch.Tensor):
        self._cpu = tensors
        self._copies: dict[torch.device, dict[str, torch.Tensor]] = {}

    def on(self, device) -> dict[str, torch.Tensor]:
        device = torch.device(device)
        if device.type == "cpu":
            return self._cpu
        if device not in self._copies:
            self._copies[device] = {name: t.to(device) for name, t in self._cpu.items()}
        return self._copies[device]


@contextmanager
def one_thread():
    """Run the enclosed torch ops on one CPU thread (restored after): a fitted basis, a direction or a PSNR
    calibration must not depend on how many threads the machine gives torch, or two runs of one suite
    release different data (a saturated uint8 release flips with the last bits of its scale)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
