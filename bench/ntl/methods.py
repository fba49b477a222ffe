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


def train_supervised(module: nn.Module, preprocess, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float,
                     seed: int, batch: int = 64) -> nn.Module:
    """Cross-entropy, Adam, seeded mini-batches: ordinary training (the `plain` defense) and the fine-tuning
    attacks (`target-ft`, `source-ft`) share this one loop. Runs where `module` and the tensors are."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    module.train()
    for _ in range(int(epochs)):
        order = torch.randperm(len(y), generator=gen).to(y.device)
        for i in range(0, len(y), batch):
            idx = order[i : i + batch]
            loss = F.cross_entropy(module(preprocess(x[idx])), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return module.eval()


# --- CUTI-domain ------------------------------------------------------------------------------------------------
# Lianyu Wang, Meng Wang, Daoqiang Zhang and Huazhu Fu, "Model Barrier: A Compact Un-Transferable Isolation Domain
# for Model Intellectual Property Protection", CVPR 2023 (code: github.com/LyWang12/CUTI-Domain, train_ts_digit.py).
# Target-specified CUTI-domain: every second step the target half of a (source, target) batch passes through the
# CUTI-domain generator after each feature stage: its features x_T become x_T * sigmoid(C_std(std_S)) +
# sigmoid(C_mean(mean_S)), where (mean_S, std_S) are the paired source image's per-channel instance statistics
# (the authorized domain's private style) and C_mean, C_std are 1x1 convolutions drawn afresh at every pass (the
# code builds new, untrained nn.Conv2d layers inside forward). Loss on every step: KL(p_S || y_S) - min(1, alpha *
# KL(p_T' || y_T)) with T' the target (even steps) or the CUTI-domain (odd steps); no MMD factor (the code has none).


def _cuti_points(module: nn.Module) -> list[nn.Module]:
    """Where the CUTI-domain generator sits: after every pooling layer (the code: after each VGG stage, each ending
    in max pooling); in a network without pooling, after every activation module (an MLP: each hidden layer)."""
    pools = [m for m in module.modules() if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d))]
    return pools or [m for m in module.modules() if isinstance(m, (nn.ReLU, nn.GELU))]


def _style(f: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel (mean, std) over the spatial positions (a 2-D feature: one channel over its
    entries), shaped to broadcast against `f` (the code's calc_ins_mean_std: unbiased variance + eps)."""
    flat = f.flatten(2) if f.dim() > 2 else f[:, None, :]
    mean, std = flat.mean(2), (flat.var(2) + eps).sqrt()
    return mean, std


def cuti_restyle(f: torch.Tensor) -> torch.Tensor:
    """One CUTI-domain generator pass on a batch whose first half is the source and second half the target."""
    b = len(f) // 2
    mean, std = _style(f[:b])
    c = mean.shape[1]
    bound = 1.0 / c**0.5  # nn.Conv2d(c, c, 1, bias=False)'s default initialisation: U(-1/sqrt(c), 1/sqrt(c))
    w_mean = (torch.rand(c, c, device=f.device, dtype=f.dtype) * 2 - 1) * bound
    w_std = (torch.rand(c, c, device=f.device, dtype=f.dtype) * 2 - 1) * bound
    shift, scale = torch.sigmoid(mean @ w_mean.T), torch.sigmoid(std @ w_std.T)  # (b, c)
    shape = (b, c) + (1,) * (f.dim() - 2) if f.dim() > 2 else (b, 1)
    return torch.cat([f[:b], f[b:] * scale.view(shape) + shift.view(shape)])


def train_cuti(module: nn.Module, preprocess, source_x, source_y, target_x, target_y, num_classes: int, *,
               epochs: int, lr: float, seed: int, alpha: float = 0.1, clip: float = 1.0, lr_decay: float = 0.999,
               every: int = 2, batch: int = 64) -> nn.Module:
    """Target-specified CUTI-domain training: Adam with the code's per-step learning-rate decay (lr x lr_decay^step),
    (source, target) pairs by index as NTL; the CUTI-domain pass on every `every`-th step (the code: odd steps)."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_decay**step)
    points = _cuti_points(module)
    module.train()
    n, step = min(len(source_y), len(target_y)), 0
    for _ in range(int(epochs)):
        order = torch.randperm(n, generator=gen).to(source_y.device)
        for i in range(0, n, batch):
            idx = order[i : i + batch]
            x = torch.cat([preprocess(source_x[idx]), preprocess(target_x[idx])])
            hooks = ([p.register_forward_hook(lambda mod, args, out: cuti_restyle(out)) for p in points]
                     if step % every == every - 1 else [])
            try:
                out_s, out_t = module(x).chunk(2)
            finally:
                for h in hooks:
                    h.remove()
            loss = _kl_onehot(out_s, source_y[idx], num_classes) - (alpha * _kl_onehot(out_t, target_y[idx],
                                                                                        num_classes)).clamp(max=clip)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
    return module.eval()


# --- SOPHON -----------------------------------------------------------------------------------------------------
# Jiangyi Deng, Shengyuan Pang, Yanjiao Chen, Liangming Xia, Yijie Bai, Haiqin Weng and Wenyuan Xu, "SOPHON:
# Non-Fine-Tunable Learning to Restrain Task Transferability For Pre-trained Models", IEEE S&P 2024 (code:
# github.com/ChiangE/Sophon, classification/inverse_loss.py and kl_uniform_loss.py). A model trained on the original
# (source) domain is reinforced by alternating (1) fine-tuning suppression: a simulated fine-tuning on the restricted
# (target) domain (first-order MAML: `inner_steps` SGD steps, each on one target batch), the suppression loss of the
# adapted weights on the held-out part of each batch averaged over the steps and its first-order gradient applied to
# the released weights (Adam, lr x alpha); and (2) normal training reinforcement: cross-entropy on source batches
# (Adam, lr x beta).


def suppression_loss(logits: torch.Tensor, y: torch.Tensor, kind: str) -> torch.Tensor:
    """The quantity SOPHON minimises on the restricted domain after simulated fine-tuning: `ice`, inverse
    cross-entropy -log(1 - p_y); `ice-code`, the classification code's form cross_entropy(1 - logits, y);
    `klu`, the KL divergence of the prediction from the uniform distribution (KL(u || p), batch mean)."""
    if kind == "ice":
        p_y = logits.softmax(1).gather(1, y[:, None]).squeeze(1)
        return -(1 - p_y).clamp_min(1e-6).log().mean()
    if kind == "ice-code":
        return F.cross_entropy(1 - logits, y)
    logp = F.log_softmax(logits, 1)
    k = logits.shape[1]
    return (-(logp.mean(1)) - torch.log(torch.tensor(float(k)))).mean()  # sum_j (1/k)(log(1/k) - log p_j)


def train_sophon(module: nn.Module, preprocess, source_x, source_y, target_x, target_y, num_classes: int, *,
                 epochs: int, lr: float, seed: int, loops: int = 50, inner_steps: int = 5, inner_lr: float = 0.01,
                 alpha: float = 3.0, beta: float = 5.0, natural_steps: int = 1, loss: str = "ice",
                 reinit_head: bool = False, batch: int = 64, sophon_lr: float = 1e-3) -> nn.Module:
    """`epochs` of ordinary source training (SOPHON protects a trained model), then `loops` rounds of fine-tuning
    suppression and normal training reinforcement. `reinit_head`: the simulated fine-tuning starts from a freshly
    initialised last Linear layer (the inverse-loss code's `initialize`)."""
    from torch.func import functional_call

    train_supervised(module, preprocess, source_x, source_y, epochs=epochs, lr=lr, seed=seed, batch=batch)
    gen = torch.Generator().manual_seed(seed + 1)
    names = [n for n, _ in module.named_parameters()]
    head = [m for m in module.modules() if isinstance(m, nn.Linear)][-1]
    head_names = {n for n, p in module.named_parameters() if any(p is q for q in head.parameters())}
    maml_opt = torch.optim.Adam(module.parameters(), lr=sophon_lr * alpha)
    natural_opt = torch.optim.Adam(module.parameters(), lr=sophon_lr * beta)
    dev = source_y.device
    module.train()
    for _ in range(int(loops)):
        buffers = {k: v.clone() for k, v in module.named_buffers()}
        fast = dict(module.named_parameters())
        if reinit_head:
            fast = {n: (nn.init.xavier_uniform_(torch.empty_like(p)) if p.dim() > 1 else torch.zeros_like(p))
                    if n in head_names else p for n, p in fast.items()}
        total, count = 0.0, 0
        for _ in range(int(inner_steps)):
            idx = torch.randperm(len(target_y), generator=gen)[:batch].to(dev)
            n_adapt = max(1, int(len(idx) * 0.9))  # the code: shots x ways = 90% of the batch adapts, the rest evaluates
            xa, ya = preprocess(target_x[idx[:n_adapt]]), target_y[idx[:n_adapt]]
            xe, ye = preprocess(target_x[idx[n_adapt:]]), target_y[idx[n_adapt:]]
            grads = torch.autograd.grad(F.cross_entropy(functional_call(module, fast, (xa,)), ya),
                                        [fast[n] for n in names], allow_unused=True)
            fast = {n: fast[n] - inner_lr * g.detach() if g is not None else fast[n] for n, g in zip(names, grads)}
            if len(ye):
                total = total + suppression_loss(functional_call(module, fast, (xe,)), ye, loss) * len(ye)
                count += len(ye)
        with torch.no_grad():  # the simulated fine-tuning leaves the released model's BatchNorm statistics alone
            for k, v in module.named_buffers():
                v.copy_(buffers[k])
        if count:
            maml_opt.zero_grad()
            (total / count).backward()
            maml_opt.step()
        for _ in range(int(natural_steps)):
            idx = torch.randperm(len(source_y), generator=gen)[:batch].to(dev)
            natural_opt.zero_grad()
            F.cross_entropy(module(preprocess(source_x[idx])), source_y[idx]).backward()
            natural_opt.step()
    return module.eval()
