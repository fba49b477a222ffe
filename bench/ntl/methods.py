"""Non-Transferable Learning (Lixu Wang, Shichao Xu, Ruiqi Xu, Xiao Wang and Qi Zhu, "Non-Transferable
Learning: A New Approach for Model Ownership Verification and Applicability Authorization", ICLR 2022;
code: github.com/conditionWang/NTL), target-specified: the model is trained on the source domain while its
predictions on the target domain are pushed away from the truth in proportion to how far apart the two
domains' features are:

    L = KL(p_S || y_S) - min(1, alpha * KL(p_T || y_T)) * min(1, beta * MMD(f_S, f_T))

with one-hot labels, the features f the network's penultimate activations (the input of its last Linear
layer), a multi-kernel Gaussian MMD (5 bandwidths, ratio 2, centred on the batch's mean pairwise distance),
alpha = beta = 0.1. This is the public code's form (`ntl_digit.py`: each factor clipped at 1); the
harness could not check the paper's typeset equation offline, so the code's constants are the defaults and
are parameters.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def mmd(a: torch.Tensor, b: torch.Tensor, kernels: int = 5, ratio: float = 2.0) -> torch.Tensor:
    """Multi-kernel Gaussian MMD between two feature batches (the code's MMD_loss)."""
    total = torch.cat([a, b])
    d2 = torch.cdist(total, total) ** 2
    n = len(total)
    bandwidth = d2.detach().sum() / max(n * n - n, 1) / ratio ** (kernels // 2)
    k = sum(torch.exp(-d2 / (bandwidth * ratio**i).clamp_min(1e-12)) for i in range(kernels))
    m = len(a)
    return (k[:m, :m] + k[m:, m:] - k[:m, m:] - k[m:, :m]).mean()


def penultimate(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, input of the last Linear layer) of one forward pass."""
    last = [m for m in module.modules() if isinstance(m, nn.Linear)][-1]
    seen = {}

    def keep(mod, args, out):
        seen["f"] = args[0]

    hook = last.register_forward_hook(keep)
    try:
        logits = module(x)
    finally:
        hook.remove()
    return logits, seen["f"].flatten(1)


def _kl_onehot(logits: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """KL(one-hot || softmax) averaged over every element, as the code's nn.KLDivLoss() default ('mean'
    reduction: divided by batch size x classes)."""
    return -F.log_softmax(logits, 1).gather(1, y[:, None]).sum() / (len(y) * num_classes)


def ntl_loss(module: nn.Module, xs, ys, xt, yt, num_classes: int, alpha: float, beta: float) -> torch.Tensor:
    out_s, f_s = penultimate(module, xs)
    out_t, f_t = penultimate(module, xt)
    loss_s = _kl_onehot(out_s, ys, num_classes)
    loss_t = (alpha * _kl_onehot(out_t, yt, num_classes)).clamp(max=1)
    dist = (beta * mmd(f_s, f_t)).clamp(max=1)
    return loss_s - loss_t * dist


def train_ntl(module: nn.Module, preprocess, source_x, source_y, target_x, target_y, num_classes: int, *,
              epochs: int, lr: float, seed: int, alpha: float = 0.1, beta: float = 0.1, batch: int = 64) -> nn.Module:
    """Adam over seeded mini-batches of paired source / target samples (the code pairs them by index)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    module.train()
    n = min(len(source_y), len(target_y))
    for _ in range(int(epochs)):
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, batch):
            idx = order[i : i + batch]
            loss = ntl_loss(module, preprocess(source_x[idx]), source_y[idx], preprocess(target_x[idx]), target_y[idx],
                            num_classes, alpha, beta)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return module.eval()
