"""CoreLocker (Wang et al., IEEE S&P 2024): lock a model by extracting its most important units.

Units are the output channels (filters) of Conv2d layers, the rows (output neurons) of Linear
layers, and the rows of a MultiheadAttention's fused `in_proj_weight` (its `out_proj` is a
Linear). The input layer (first such layer the input reaches) and the output layer (last one)
are never touched (Sec. 3.1). Layers are found by tracing one forward pass of a seeded probe.

`ratio` counts units: k = max(1, round(ratio * U)) of the U eligible units of all hidden
layers together (a global ratio, not per layer). Criteria (Sec. 3.2), ranked globally by raw
value: "l1" = sum |w| of the filter/row; "bn-scale" = |gamma| of the BatchNorm that directly
consumes a conv/linear output (units without one are ranked by l1 in a separate pool that gets
its proportional share of k, since |gamma| and l1 are not comparable); "random" = uniform.

Extraction zeroes each selected filter/row, its bias and its BatchNorm gamma/beta (its feature
map becomes exactly zero), that BatchNorm's running mean and variance for the unit (per-channel
statistics of the training data, which would otherwise leak; the key restores them), and the linked input channels/columns of the next layer (Sec. 3.2,
step 4). A link is made only where that layer's input at those positions is verified to be
exactly zero on the probe after extraction (not where a residual add or a concat keeps it
alive); unlinked units are counted in `cost["notes"]`.

The key holds exactly the zeroed values and their flat positions per parameter
(`<param>.values`, `<param>.index`), plus `__model_digest__` and `__weights_digest__` (uint8
hex strings; in safetensors metadata when saved).
"""

from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save as save_bytes

from bench.defenses.base import ModelDefense, Protected
from bench.errors import UserError
from bench.models.adapter import ModelAdapter, weights_digest

CRITERIA = ("l1", "bn-scale", "random")
DIGEST_KEYS = ("__model_digest__", "__weights_digest__")
PROBE = 4


@dataclass
class Group:
    """The units of one layer: rows of `weight` (+ `bias`), the BatchNorm reading them, its next layer."""

    layer: str  # traced module name
    weight: str  # parameter names
    bias: str | None
    size: int
    bn: str | None = None
    next: str | None = None  # traced name of the next layer in execution order


def _layers(module: nn.Module, probe: torch.Tensor):
    """Execution-order trace: [(name, module)] of Conv2d/Linear/MHA/BatchNorm calls, their input
    tensors and output tensors (MHA outputs unwrapped)."""
    order, inputs, outputs, handles = [], {}, {}, []
    kinds = (nn.Conv2d, nn.Linear, nn.MultiheadAttention, nn.modules.batchnorm._BatchNorm)

    def hook(name):
        def fn(mod, args, out):
            if name not in inputs:
                order.append((name, mod))
                inputs[name] = args[0]
                outputs[name] = out[0] if isinstance(out, tuple) else out
        return fn

    for name, mod in module.named_modules():
        if isinstance(mod, kinds):
            handles.append(mod.register_forward_hook(hook(name)))
    try:
        with torch.enable_grad():  # grad on: no fused fast path that bypasses the MHA module
            module(probe)
    finally:
        for h in handles:
            h.remove()
    return order, inputs, outputs


def _groups(module: nn.Module, probe: torch.Tensor) -> tuple[list[Group], dict, dict]:
    order, inputs, outputs = _layers(module, probe)
    mhas = [n for n, m in order if isinstance(m, nn.MultiheadAttention)]
    linear = [(n, m) for n, m in order if isinstance(m, (nn.Conv2d, nn.Linear, nn.MultiheadAttention))
              and not any(n.startswith(f"{a}.") for a in mhas)]
    groups = []
    for i, (name, mod) in enumerate(linear[1:-1], start=1):  # no input / output layer
        nxt = linear[i + 1][0]
        pre = f"{name}." if name else ""
        if isinstance(mod, nn.MultiheadAttention):
            if mod.in_proj_weight is not None:
                groups.append(Group(name, pre + "in_proj_weight", pre + "in_proj_bias" if mod.in_proj_bias is not None
                                    else None, mod.in_proj_weight.shape[0]))
            out = mod.out_proj
            groups.append(Group(name, pre + "out_proj.weight", pre + "out_proj.bias" if out.bias is not None else None,
                                out.weight.shape[0], next=nxt))
            continue
        bn = next((n for n, m in order if isinstance(m, nn.modules.batchnorm._BatchNorm)
                   and inputs[n] is outputs[name] and m.affine), None)
        groups.append(Group(name, pre + "weight", pre + "bias" if mod.bias is not None else None,
                            mod.weight.shape[0], bn=bn, next=nxt))
    return groups, dict(linear), inputs


def _select(groups: list[Group], params: dict, criterion: str, ratio: float, gen: torch.Generator):
    """[(group index, row)] of the k extracted units, and notes."""
    units = [(g, r) for g, grp in enumerate(groups) for r in range(grp.size)]
    if not units:
        raise UserError("corelocker found no hidden Conv2d/Linear/MultiheadAttention layer to extract from")
    k = max(1, round(ratio * len(units))) if ratio > 0 else 0
    if criterion == "random":
        pick = torch.randperm(len(units), generator=gen)[:k].tolist()
        return [units[i] for i in sorted(pick)], []

    def l1(g):
        return params[groups[g].weight].detach().flatten(1).abs().sum(1).double()

    pools = {"l1": list(range(len(groups)))} if criterion == "l1" else {
        "bn-scale": [g for g, grp in enumerate(groups) if grp.bn],
        "l1": [g for g, grp in enumerate(groups) if not grp.bn]}
    notes = []
    if criterion == "bn-scale" and pools["l1"]:
        n_fb = sum(groups[g].size for g in pools["l1"])
        notes.append(f"bn-scale: {len(pools['l1'])} layers ({n_fb} units) without a following BatchNorm ranked by l1 "
                     "in their own pool with a proportional share of k")
    chosen, left = [], k
    pools = [(c, p) for c, p in pools.items() if p]
    for i, (crit, pool) in enumerate(pools):
        n = sum(groups[g].size for g in pool)
        take = left if i == len(pools) - 1 else min(left, round(k * n / len(units)))
        left -= take
        score = torch.cat([params[f"{groups[g].bn}.weight"].detach().abs().double() if crit == "bn-scale" else l1(g)
                           for g in pool])
        ids = [(g, r) for g in pool for r in range(groups[g].size)]
        order = torch.sort(score, descending=True, stable=True).indices[:take].tolist()
        chosen += [ids[i] for i in order]
    return sorted(chosen), notes


def _link_mask(layer: nn.Module, x: torch.Tensor, rows: list[int], out_size: int) -> torch.Tensor | None:
    """Input positions of `layer` fed by the removed `rows` of a previous layer with `out_size`
    rows: the same channels, or for a Linear a channel-major flatten of them; None when the
    sizes do not match (concat, grouped conv)."""
    conv = isinstance(layer, nn.Conv2d)
    dim = x.shape[1] if conv else x.shape[-1]
    if (conv and (layer.groups != 1 or dim != out_size)) or dim % out_size:
        return None
    mask = torch.zeros(out_size, dim // out_size, dtype=torch.bool)
    mask[rows] = True
    return mask.flatten()


def _extract(module: nn.Module, groups: list[Group], chosen, linear: dict, probe: torch.Tensor) -> tuple[dict, list]:
    """Zero the chosen units in place; return masks {param: bool tensor} and notes."""
    params = dict(module.named_parameters())
    masks = {}

    def mark(name, index):
        m = masks.setdefault(name, torch.zeros_like(params[name], dtype=torch.bool))
        m[index] = True

    by_group: dict[int, list[int]] = {}
    for g, r in chosen:
        by_group.setdefault(g, []).append(r)
    for g, rows in by_group.items():
        grp = groups[g]
        for name in (grp.weight, grp.bias, grp.bn and f"{grp.bn}.weight", grp.bn and f"{grp.bn}.bias"):
            if name:
                mark(name, rows)
    _zero(params, masks)
    _, after, _ = _layers(module, probe)
    unlinked, notes = 0, []
    for g, rows in by_group.items():
        grp = groups[g]
        nxt = grp.next and linear[grp.next]
        if nxt is None or grp.next == list(linear)[-1]:  # the output layer is never touched
            unlinked += len(rows)
            continue
        x = after[grp.next].detach()
        mask = _link_mask(nxt, x, rows, grp.size)
        if mask is not None:
            feat = x.transpose(0, 1).flatten(1) if isinstance(nxt, nn.Conv2d) else x.flatten(0, -2).T
            mask = mask & (feat == 0).all(1)
        if mask is None or not mask.any():
            unlinked += len(rows)
            continue
        weight = "in_proj_weight" if isinstance(nxt, nn.MultiheadAttention) else "weight"
        name = f"{grp.next}.{weight}" if grp.next else weight
        mark(name, (slice(None), mask.nonzero().flatten()))
    if unlinked:
        notes.append(f"{unlinked} extracted units without a verified next-layer link (residual add, concat, "
                     "attention or output layer): only the unit itself was zeroed")
    _zero(params, masks)
    return masks, notes


@torch.no_grad()
def _zero(params: dict, masks: dict) -> None:
    for name, m in masks.items():
        params[name][m] = 0


def _hex(s: str) -> torch.Tensor:
    return torch.tensor(list(s.encode()), dtype=torch.uint8)


class CoreLocker(ModelDefense):
    name = "corelocker"
    description = "CoreLocker: zero the top-ratio filters/rows (global, by l1 or BN scale) and release; the key restores them"
    defaults = {"ratio": 0.05, "criterion": "bn-scale", "seed": 0}
    param_schema = {"ratio": {"type": "number", "minimum": 0, "maximum": 1}, "criterion": {"enum": list(CRITERIA)},
                    "seed": {"type": "integer"}}

    def protect(self, model, train, seed: int) -> Protected:
        start = time.perf_counter()
        h = hashlib.sha256(f"corelocker|{self.params['seed']}|{seed}".encode()).digest()
        gen = torch.Generator().manual_seed(int.from_bytes(h[:8], "little") & ((1 << 63) - 1))
        probe = torch.randn(PROBE, *model.preprocess.input_size, generator=gen)
        released = copy.deepcopy(model.module).eval()
        groups, linear, _ = _groups(released, probe)
        params = dict(released.named_parameters())
        chosen, notes = _select(groups, params, self.params["criterion"], float(self.params["ratio"]), gen)
        original = {n: p.detach().clone() for n, p in params.items()}
        masks, link_notes = _extract(released, groups, chosen, linear, probe)
        stats = _bn_statistics(released, groups, chosen)  # per-channel running statistics leak too: extract them
        original.update({n: b.detach().clone() for n, b in dict(released.named_buffers()).items() if n in stats})
        with torch.no_grad():
            for name, m in stats.items():
                dict(released.named_buffers())[name][m] = 0
        key = {}
        for name, m in sorted({**masks, **stats}.items()):
            index = m.flatten().nonzero().flatten()
            key[f"{name}.values"] = original[name].flatten()[index].contiguous()
            key[f"{name}.index"] = index
        key["__model_digest__"] = _hex(model.digest)
        key["__weights_digest__"] = _hex(weights_digest(model.module))
        protect_ms = (time.perf_counter() - start) * 1e3
        n_values = sum(v.numel() for k, v in key.items() if k.endswith(".values"))
        n_weights = sum(v.numel() for k, v in key.items() if k.endswith(".values") and k[: -len(".values")] in params)
        cost = {
            "key_bytes": len(key_bytes(key)),
            "key_values": n_values,
            "protect_ms": protect_ms,
            "retraining": False,
            "architecture_changed": False,
            "units_extracted": len(chosen),
            "units_eligible": sum(g.size for g in groups),
            "fraction_of_params": n_weights / sum(p.numel() for p in params.values()),
            "notes": "; ".join(notes + link_notes),
        }
        return Protected(released, key, cost)

    def authorized(self, protected: Protected, model) -> ModelAdapter:
        module = unlock(protected.released, protected.key, model.digest)
        return type(model)(model.name, module, model.preprocess, model.arch, model.source)


def _bn_statistics(module: nn.Module, groups: list, chosen: list) -> dict[str, torch.Tensor]:
    """Masks of the BatchNorm running mean / variance entries of the extracted units (the channels whose
    gamma and beta are extracted): zeroed in the released model, restored from the key."""
    buffers = dict(module.named_buffers())
    masks: dict[str, torch.Tensor] = {}
    for g, r in chosen:
        bn = groups[g].bn
        for stat in ("running_mean", "running_var"):
            name = f"{bn}.{stat}" if bn else None
            if name in buffers:
                masks.setdefault(name, torch.zeros_like(buffers[name], dtype=torch.bool))[r] = True
    return masks


def _digests(key: dict) -> dict[str, str]:
    missing = [k for k in DIGEST_KEYS if k not in key]
    if missing:
        raise UserError(f"not a corelocker key: missing {missing[0]!r}")
    return {k: bytes(key[k].tolist()).decode() for k in DIGEST_KEYS}


def unlock(released: nn.Module, key: dict, model_digest: str) -> nn.Module:
    """A copy of `released` with the key's values restored (bit for bit); UserError for a wrong model."""
    digests = _digests(key)
    if digests["__model_digest__"] != model_digest:
        raise UserError(f"corelocker key belongs to model {digests['__model_digest__'][:12]}, not {model_digest[:12]}")
    module = copy.deepcopy(released)
    params = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    with torch.no_grad():
        for entry in key:
            if not entry.endswith(".values"):
                continue
            name = entry[: -len(".values")]
            index = key.get(f"{name}.index")
            if name not in params or index is None:
                raise UserError(f"corelocker key names parameter {name!r}, which this model does not have")
            p = params[name]
            if len(index) and int(index.max()) >= p.numel() or key[entry].dtype != p.dtype:
                raise UserError(f"corelocker key does not fit parameter {name!r} {tuple(p.shape)} {p.dtype}")
            p.view(-1)[index] = key[entry]
    if weights_digest(module) != digests["__weights_digest__"]:
        raise UserError("corelocker key does not restore this model (weights digest mismatch after unlock)")
    return module


def key_bytes(key: dict) -> bytes:
    """The key as safetensors bytes; the digests go to the metadata."""
    digests = _digests(key)
    tensors = {k: v.contiguous() for k, v in key.items() if k not in DIGEST_KEYS}
    return save_bytes(tensors, metadata={"format": "corelocker-key", **digests})


def save_key(key: dict, path) -> Path:
    path = Path(path)
    path.write_bytes(key_bytes(key))
    return path


def load_key(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise UserError(f"corelocker key file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            key = {k: f.get_tensor(k) for k in f.keys()}
    except Exception:
        raise UserError(f"{path} is not a safetensors corelocker key") from None
    if meta.get("format") != "corelocker-key":
        raise UserError(f"{path} is not a corelocker key (metadata format {meta.get('format')!r})")
    key.update({k: _hex(meta[k]) for k in DIGEST_KEYS})
    return key
