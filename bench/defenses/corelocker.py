"""CoreLocker: lock a model by extracting its most important units (Zihan Wang, Zhongkui Ma, Xinguo Feng,
Ruoxi Sun, Hu Wang, Minhui Xue and Guangdong Bai, "CoreLocker: Neuron-level Usage Control", IEEE S&P 2024).

Layers are found by tracing one forward pass of a seeded probe: images of the model's input size,
or token ids for a text classifier (bench.text.adapter.TextClassifier). The input layer (the first
Conv2d/Linear/attention/recurrent layer the input reaches) and the output layer (the last one) are
never touched (Sec. 3.1).

Units and criteria (Sec. 3.2), each pool ranked globally over all hidden layers:
- `criterion = "l1"` with `granularity = "weight"` (default; Definition 1 and Sec. 5.1 extract
  single weights): every hidden Linear, attention-projection and recurrent (LSTM/GRU/RNN) weight is
  a unit, ranked by |w|; Conv2d layers keep whole filters, ranked by the filter's l1 norm (the
  Remark after Definition 1). Filters and single weights are two pools (their scores are not
  comparable); each extracts the `ratio` share of its own size.
- `granularity = "row"`: Linear / attention / recurrent rows ranked by their l1 norm (the
  harness's earlier behaviour), in one pool with the conv filters.
- `criterion = "bn-scale"`: every affine BatchNorm channel the probe reaches, ranked globally by
  |gamma|, as the public code does (corelock.py ranks all BatchNorm2d weights against one
  threshold), so pre-activation ResNet-164 and DenseNet-40 use their BN layers wherever they sit.
  A model without BatchNorm falls back to l1 (noted in the cost).
- `criterion = "random"`: the paper's control, uniform over the same units.
`ratio` counts units: k = max(1, round(ratio * U)) of the U eligible units.

Extraction zeroes the unit: a filter/row with its bias and its BatchNorm gamma/beta; a single
weight alone; a BatchNorm channel's gamma and beta, plus the producing filter when the BN reads a
hidden layer's output and zeroing that filter provably changes nothing else on the probe (not
where the output also feeds a concat or a residual). The running mean and variance of an
extracted BN channel are extracted too (per-channel statistics of the training data, which would
otherwise leak; the public code leaves them). The next layer's input channels/columns fed by an
extracted filter/row/channel are zeroed (Sec. 3.2 step 4) only where verified exactly zero on the
probe; unlinked units are counted in `cost["notes"]`.

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

from bench.defenses.base import DEFENSES, ModelDefense, Protected
from bench.core.errors import UserError
from bench.models.adapter import ModelAdapter, weights_digest

CRITERIA = ("l1", "bn-scale", "random")
GRANULARITIES = ("weight", "row")
COUNTS = ("paper", "code")
RANDOM_UNITS = ("weight", "filter")
DIGEST_KEYS = ("__model_digest__", "__weights_digest__")
PROBE = 4
PROBE_TOKENS = 16


@dataclass
class Group:
    """The units of one layer. Row units: rows of `weight` (+ `bias`), the BatchNorm reading them, the
    next layer. Entry units (`entries`): the single weights of `weight`, flat. BatchNorm units (`bn_unit`):
    the channels of the BatchNorm `layer` (`weight` = its gamma, `bias` = its beta); `extra` names the
    producing layer's weight/bias, whose rows are extracted with the channel where that is exact."""

    layer: str  # traced module name
    weight: str  # parameter names
    bias: str | None
    size: int
    bn: str | None = None
    next: str | None = None  # traced name of the next layer in execution order
    entries: bool = False
    bn_unit: bool = False
    extra: tuple[str, ...] = ()


def probe_forward(model, gen: torch.Generator):
    """A seeded probe batch for `model` and the call that runs a module on it: images of the model's input
    size, or for a text classifier (an adapter with a `tokenizer`) random token ids with a full mask."""
    if hasattr(model, "tokenizer"):
        vocab = int(model.model.config.vocab_size)
        ids = torch.randint(0, vocab, (PROBE, min(PROBE_TOKENS, model.max_length)), generator=gen)
        mask = torch.ones_like(ids)
        return lambda m: m(input_ids=ids.to(_device(m)), attention_mask=mask.to(_device(m)))
    x = torch.randn(PROBE, *model.preprocess.input_size, generator=gen)
    return lambda m: m(x.to(_device(m)))


def _device(module: nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _module(model) -> nn.Module:
    return model.model if hasattr(model, "tokenizer") else model.module


def _logits(out) -> torch.Tensor:
    return out.logits if hasattr(out, "logits") else out


def _layers(module: nn.Module, forward):
    """Execution-order trace: [(name, module)] of Conv2d/Linear/MHA/BatchNorm calls, their input
    tensors and output tensors (MHA outputs unwrapped), and the module's output."""
    order, inputs, outputs, handles = [], {}, {}, []
    kinds = (nn.Conv2d, nn.Linear, nn.MultiheadAttention, nn.RNNBase, nn.modules.batchnorm._BatchNorm)

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
            result = forward(module)
    finally:
        for h in handles:
            h.remove()
    return order, inputs, outputs, _logits(result)


def _groups(module: nn.Module, forward, granularity: str = "row", conv_weights: bool = False
            ) -> tuple[list[Group], dict, dict, list]:
    """Hidden Conv2d/Linear/MHA groups (Linear and MHA projections as single weights when
    `granularity == "weight"`; Conv2d as filters, or as single weights too with `conv_weights`: the
    random control's units), the traced layers, their inputs, and the BatchNorm units: one group per
    affine BatchNorm the probe reaches, in execution order."""
    order, inputs, outputs, _ = _layers(module, forward)
    mhas = [n for n, m in order if isinstance(m, nn.MultiheadAttention)]
    linear = [(n, m) for n, m in order if isinstance(m, (nn.Conv2d, nn.Linear, nn.MultiheadAttention, nn.RNNBase))
              and not any(n.startswith(f"{a}.") for a in mhas)]
    entries = granularity == "weight"
    groups, by_output = [], {}
    for i, (name, mod) in enumerate(linear[1:-1], start=1):  # no input / output layer
        nxt = linear[i + 1][0]
        pre = f"{name}." if name else ""
        if isinstance(mod, nn.MultiheadAttention):
            if mod.in_proj_weight is not None:
                w = mod.in_proj_weight
                groups.append(Group(name, pre + "in_proj_weight", None if entries or mod.in_proj_bias is None
                                    else pre + "in_proj_bias", w.numel() if entries else w.shape[0], entries=entries))
            out = mod.out_proj
            groups.append(Group(name, pre + "out_proj.weight", None if entries or out.bias is None else pre + "out_proj.bias",
                                out.weight.numel() if entries else out.weight.shape[0], next=None if entries else nxt,
                                entries=entries))
            continue
        if isinstance(mod, nn.RNNBase):  # LSTM/GRU/RNN: its input-hidden and hidden-hidden matrices
            for wname, w in mod.named_parameters():
                if wname.startswith("weight_"):
                    bname = wname.replace("weight_", "bias_", 1)
                    groups.append(Group(name, pre + wname, None if entries or getattr(mod, bname, None) is None
                                        else pre + bname, w.numel() if entries else w.shape[0], entries=entries))
            continue
        if entries and (isinstance(mod, nn.Linear) or conv_weights):
            groups.append(Group(name, pre + "weight", None, mod.weight.numel(), entries=True))
            continue
        bn = next((n for n, m in order if isinstance(m, nn.modules.batchnorm._BatchNorm)
                   and inputs[n] is outputs[name] and m.affine), None)
        groups.append(Group(name, pre + "weight", pre + "bias" if mod.bias is not None else None,
                            mod.weight.shape[0], bn=bn, next=nxt))
        by_output[id(outputs[name])] = groups[-1]
    names = [n for n, _ in linear]
    position = {n: i for i, (n, _) in enumerate(order)}
    bns = []
    for name, mod in order:
        if not (isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.affine):
            continue
        after = [n for n in names if position[n] > position[name]]
        producer = by_output.get(id(inputs[name]))
        extra = tuple(p for p in (producer.weight, producer.bias) if p) if producer and producer.size == mod.num_features \
            else ()
        pre = f"{name}." if name else ""
        bns.append(Group(name, pre + "weight", pre + "bias", mod.num_features, bn=name,
                         next=after[0] if after else None, bn_unit=True, extra=extra))
    return groups, dict(linear), inputs, bns


def code_count(n: int, ratio: float) -> int:
    """How many of n units the public code extracts at `ratio` (corelock.py: threshold = the ascending-sorted
    score at index int(n * (1 - ratio)), units strictly above it extracted; distinct scores)."""
    cut = int(n * (1 - ratio))
    return max(n - cut - 1, 0) if cut < n else 0


def _select(groups: list[Group], params: dict, criterion: str, ratio: float, gen: torch.Generator,
            count: str = "paper"):
    """[(group index, unit)] of the extracted units, and notes. Groups of one kind (filters/rows, single
    weights, BatchNorm channels) form one pool ranked globally; with several pools each takes the
    `ratio` share of its own size (scores of different kinds are not comparable). `count = "code"`: each
    pool extracts the units strictly above the public code's threshold instead (`code_count` for distinct
    scores: one fewer than round(ratio * n) at 0.05 of 150 BatchNorm channels, 7 against 8)."""
    n_units = sum(g.size for g in groups)
    if not n_units:
        raise UserError("corelocker found no hidden Conv2d/Linear/MultiheadAttention layer to extract from")
    k = max(1, round(ratio * n_units)) if ratio > 0 else 0

    def score(g):
        grp = groups[g]
        w = params[grp.weight].detach()
        if criterion == "random":
            return torch.rand(grp.size, generator=gen, dtype=torch.float64)
        if grp.bn_unit:
            return w.abs().double()
        if grp.entries:
            return w.flatten().abs().double()
        return w.flatten(1).abs().sum(1).double()

    pools: dict[str, list[int]] = {}
    for g, grp in enumerate(groups):
        pools.setdefault("bn" if grp.bn_unit else "weights" if grp.entries else "units", []).append(g)
    chosen, left = [], k
    for i, pool in enumerate(pools.values()):
        n = sum(groups[g].size for g in pool)
        take = left if i == len(pools) - 1 else min(left, round(k * n / n_units))
        left -= take
        values = torch.cat([score(g) for g in pool])
        ids = [(g, r) for g in pool for r in range(groups[g].size)]
        if count == "code":  # the code's threshold: strictly above the sorted score at int(n * (1 - ratio))
            cut = int(n * (1 - ratio))
            take = int((values > torch.sort(values).values[cut]).sum()) if ratio > 0 and cut < n else 0
        top = torch.sort(values, descending=True, stable=True).indices[:take].tolist()
        chosen += [ids[i] for i in top]
    return sorted(chosen), []


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


def _extract(module: nn.Module, groups: list[Group], chosen, linear: dict, forward) -> tuple[dict, list]:
    """Zero the chosen units in place; return masks {param: bool tensor} and notes."""
    params = dict(module.named_parameters())
    masks = {}

    def mark(name, index):
        masks.setdefault(name, torch.zeros_like(params[name], dtype=torch.bool))[index] = True

    by_group: dict[int, list[int]] = {}
    for g, r in chosen:
        by_group.setdefault(g, []).append(r)
    for g, rows in by_group.items():
        grp = groups[g]
        if grp.entries:
            masks.setdefault(grp.weight, torch.zeros_like(params[grp.weight], dtype=torch.bool)).view(-1)[rows] = True
            continue
        for name in (grp.weight, grp.bias, grp.bn and f"{grp.bn}.weight", grp.bn and f"{grp.bn}.bias"):
            if name:
                mark(name, rows)
    _zero(params, masks)
    notes = _producers(module, groups, by_group, params, masks, forward)
    _, after, _, _ = _layers(module, forward)
    unlinked = 0
    for g, rows in by_group.items():
        grp = groups[g]
        if grp.entries:  # a single weight: no unit, nothing linked
            continue
        nxt = grp.next and linear[grp.next]
        if nxt is None or grp.next == list(linear)[-1] or isinstance(nxt, nn.RNNBase):  # output layer: never touched
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


def _producers(module: nn.Module, groups: list[Group], by_group: dict, params: dict, masks: dict, forward) -> list:
    """For extracted BatchNorm channels: also extract the producing filters (paper Sec. 3.2, "filters
    associated with higher scaling factors") where that is exact: the model's probe output does not
    change, i.e. the filter's output reaches nothing but the zeroed channel (not a concat or a residual)."""
    todo = [(g, rows) for g, rows in by_group.items() if groups[g].extra]
    if not todo:
        return []
    with torch.no_grad():
        base = _layers(module, forward)[3].detach().clone()
    kept = 0
    for g, rows in todo:
        saved = {name: params[name].detach()[rows].clone() for name in groups[g].extra}
        with torch.no_grad():
            for name in saved:
                params[name][rows] = 0
            same = torch.equal(_layers(module, forward)[3], base)
            if not same:
                for name, value in saved.items():
                    params[name][rows] = value
        if same:
            for name in saved:
                masks.setdefault(name, torch.zeros_like(params[name], dtype=torch.bool))[rows] = True
        else:
            kept += len(rows)
    return [f"bn-scale: {kept} extracted BatchNorm channels whose producing filter also feeds other layers "
            "(concat or residual): only the channel's gamma, beta and statistics were extracted"] if kept else []


@torch.no_grad()
def _zero(params: dict, masks: dict) -> None:
    for name, m in masks.items():
        params[name][m] = 0


def digest_tensor(s: str) -> torch.Tensor:
    return torch.tensor(list(s.encode()), dtype=torch.uint8)


@DEFENSES.register
class CoreLocker(ModelDefense):
    name = "corelocker"
    description = ("CoreLocker: zero the top-ratio weights/filters (global, by l1) or BatchNorm channels (global, by "
                   "|gamma|) and release; the key restores them")
    defaults = {"ratio": 0.05, "criterion": "bn-scale", "granularity": "weight", "count": "paper",
                "random_unit": "weight", "seed": 0}
    param_schema = {"ratio": {"type": "number", "minimum": 0, "maximum": 1}, "criterion": {"enum": list(CRITERIA)},
                    "granularity": {"enum": list(GRANULARITIES)}, "count": {"enum": list(COUNTS)},
                    "random_unit": {"enum": list(RANDOM_UNITS)}, "seed": {"type": "integer"}}

    def protect(self, model, train, seed: int) -> Protected:
        start = time.perf_counter()
        h = hashlib.sha256(f"corelocker|{self.params['seed']}|{seed}".encode()).digest()
        gen = torch.Generator().manual_seed(int.from_bytes(h[:8], "little") & ((1 << 63) - 1))
        forward = probe_forward(model, gen)
        released = copy.deepcopy(_module(model)).eval()
        criterion = self.params["criterion"]
        random_weights = criterion == "random" and self.params["random_unit"] == "weight"  # the paper's control
        layers, linear, _, bns = _groups(released, forward, "weight" if random_weights else self.params["granularity"],
                                         conv_weights=random_weights)
        notes = []
        if criterion == "bn-scale" and not bns:
            notes.append("bn-scale: the model has no affine BatchNorm; units ranked by l1 instead")
        groups = bns if criterion == "bn-scale" and bns else layers
        params = dict(released.named_parameters())
        chosen, _ = _select(groups, params, "l1" if criterion == "bn-scale" and not bns else criterion,
                            float(self.params["ratio"]), gen, self.params["count"])
        original = {n: p.detach().clone() for n, p in params.items()}
        masks, link_notes = _extract(released, groups, chosen, linear, forward)
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
        key["__model_digest__"] = digest_tensor(model.digest)
        key["__weights_digest__"] = digest_tensor(weights_digest(_module(model)))
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
            "unit": "batchnorm channel" if groups is bns else ("weight or filter" if any(g.entries for g in groups)
                                                                else "filter or row"),
            "fraction_of_params": n_weights / sum(p.numel() for p in params.values()),
            "notes": "; ".join(notes + link_notes),
        }
        return Protected(released, key, cost)

    def authorized(self, protected: Protected, model):
        module = unlock(protected.released, protected.key, model.digest)
        if hasattr(model, "tokenizer"):  # a text classifier (bench.text.adapter.TextClassifier)
            return type(model)(model.name, module, model.tokenizer, model.source, model.max_length, model.label_order)
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
    key.update({k: digest_tensor(meta[k]) for k in DIGEST_KEYS})
    return key
