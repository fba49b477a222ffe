"""A BERT encoder exported to ONNX, rebuilt as a transformers `BertModel` with the file's own weights.

NE's text path needs the model's embedding module and its first query/key/value projections as
modules (bench.text.adapter); a generic ONNX conversion (onnx2torch) gives a graph without them. A
BERT exported by `torch.onnx.export` keeps its parameters as initializers: the embedding tables,
LayerNorm parameters and biases under their PyTorch names (`...embeddings.word_embeddings.weight`,
`...encoder.layer.0.attention.self.query.bias`), and every Linear weight, transposed, as the second
input of a MatMul (`onnx::MatMul_470`) whose output the Linear's named bias is added to. This module
reads those initializers, names each MatMul weight after the bias its output meets, checks that every
`BertModel` parameter is found exactly once with the right shape, and loads them strictly.

The configuration comes from the tensors (vocabulary, width, layers, feed-forward size, positions,
token types), the LayerNormalization epsilon and the Erf nodes (exact GELU); the head count is not a
tensor shape: it is read from the integer constants of the attention reshapes (the pair h, d with
h * d = width), or given. `check_against_onnxruntime` compares the rebuilt model's last hidden state
with onnxruntime on the same file (the kit test and `python -m bench.recipes.sst2_heads --check`).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from bench.core.errors import UserError

_EMB = "embeddings.word_embeddings.weight"
_LAYER = re.compile(r"encoder\.layer\.(\d+)\.")


def _load(path: Path):
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise UserError("reading a BERT from ONNX needs the `onnx` package (pip install onnx)") from None
    if not Path(path).is_file():
        raise UserError(f"ONNX encoder {str(path)!r} does not exist")
    model = onnx.load(str(path))
    return model, {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}, numpy_helper


def _prefix(init: dict) -> str:
    found = [k[: -len(_EMB)] for k in init if k.endswith(_EMB)]
    if len(found) != 1:
        raise UserError(f"the ONNX file has {len(found)} tensors named '*{_EMB}'; a BERT export has exactly one")
    return found[0]


def _constants(model, numpy_helper) -> dict[str, np.ndarray]:
    out = {}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    out[node.output[0]] = numpy_helper.to_array(a.t)
    return out


def _heads(model, numpy_helper, init: dict, hidden: int) -> int | None:
    """The attention head count: a Reshape to (..., h, d) with h * d = width, or to (..., -1, d), read from
    the integer constants of its target shape (a constant, or a Concat of constants and runtime sizes)."""
    consts = {**_constants(model, numpy_helper), **{k: v for k, v in init.items() if v.dtype.kind == "i"}}
    producers = {o: n for n in model.graph.node for o in n.output}
    found: set[int] = set()
    for node in model.graph.node:
        if node.op_type != "Reshape":
            continue
        shape = node.input[1]
        if shape in consts:
            target = [int(v) for v in np.ravel(consts[shape])]
        elif shape in producers and producers[shape].op_type == "Concat":
            target = []
            for part in producers[shape].input:
                src = producers.get(part)
                if src is not None and src.op_type == "Unsqueeze":
                    part = src.input[0]
                target += [int(v) for v in np.ravel(consts[part])] if part in consts else [None]
        else:
            continue
        if len(target) < 2 or None in target[-2:]:
            continue
        h, d = target[-2:]
        if h > 1 and h * d == hidden:  # (..., heads, head_dim)
            found.add(h)
        elif h == -1 and 1 < d < hidden and hidden % d == 0:  # (..., -1, head_dim), as transformers >= 4.48 writes it
            found.add(hidden // d)
    return found.pop() if len(found) == 1 else None


def bert_state_from_onnx(path: Path, num_attention_heads: int | None = None):
    """(BertConfig, state dict of torch tensors) for the BERT in an ONNX file."""
    from transformers import BertConfig

    model, init, numpy_helper = _load(path)
    prefix = _prefix(init)
    named = {k[len(prefix):]: v for k, v in init.items() if k.startswith(prefix)}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    for node in model.graph.node:  # Linear weights: MatMul(x, W) -> Add(bias, .) with a named bias
        if node.op_type != "MatMul" or node.input[1] not in init or node.input[1].startswith(prefix):
            continue
        adds = [n for n in consumers.get(node.output[0], []) if n.op_type == "Add"]
        biases = [i for n in adds for i in n.input if i.startswith(prefix) and i.endswith(".bias")]
        if len(biases) != 1:
            raise UserError(f"ONNX MatMul weight {node.input[1]!r} meets {len(biases)} named biases; "
                            "cannot tell which Linear it belongs to (not a torch.onnx BERT export?)")
        name = biases[0][len(prefix):-len(".bias")] + ".weight"
        if name in named:
            raise UserError(f"ONNX file: two weights map to {name!r}")
        named[name] = init[node.input[1]].T
    words = named["embeddings.word_embeddings.weight"]
    hidden = int(words.shape[1])
    layers = sorted({int(m.group(1)) for k in named if (m := _LAYER.search(k))})
    if layers != list(range(len(layers))) or not layers:
        raise UserError(f"ONNX BERT: encoder layers {layers} are not 0..n-1")
    eps = [a.f for n in model.graph.node if n.op_type == "LayerNormalization" for a in n.attribute if a.name == "epsilon"]
    heads = num_attention_heads or _heads(model, numpy_helper, init, hidden)
    if not heads:
        raise UserError("could not read the attention head count from the ONNX file; give num_attention_heads")
    if hidden % int(heads):
        raise UserError(f"num_attention_heads {heads} does not divide the width {hidden}")
    ops = {n.op_type for n in model.graph.node}
    config = BertConfig(
        vocab_size=int(words.shape[0]), hidden_size=hidden, num_hidden_layers=len(layers),
        num_attention_heads=int(heads), intermediate_size=int(named["encoder.layer.0.intermediate.dense.bias"].shape[0]),
        max_position_embeddings=int(named["embeddings.position_embeddings.weight"].shape[0]),
        type_vocab_size=int(named["embeddings.token_type_embeddings.weight"].shape[0]),
        layer_norm_eps=float(np.float32(eps[0])) if eps else 1e-12,
        hidden_act="gelu" if "Erf" in ops else "gelu_new", pad_token_id=0)
    return config, {k: torch.tensor(np.array(v, dtype=np.float32)) for k, v in named.items()}


def bert_from_onnx(path: Path, num_attention_heads: int | None = None):
    """A `BertModel` (eval mode, no pooler) holding the ONNX file's weights; every parameter must be present."""
    from transformers import BertModel

    config, state = bert_state_from_onnx(path, num_attention_heads)
    model = BertModel(config, add_pooling_layer=False)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("position_ids")
                and not k.endswith("token_type_ids")}
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise UserError(f"ONNX BERT {str(path)!r}: missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                        f"unexpected {extra[:3]}{'...' if len(extra) > 3 else ''}")
    bad = [k for k, s in expected.items() if tuple(state[k].shape) != s]
    if bad:
        raise UserError(f"ONNX BERT {str(path)!r}: {bad[0]} has shape {tuple(state[bad[0]].shape)}, "
                        f"BertModel expects {expected[bad[0]]}")
    model.load_state_dict(state, strict=False)
    return model.eval()


def onnx_hidden_output(path: Path, hidden: int) -> str:
    """Name of the graph output that is the last hidden state (the final LayerNormalization's output)."""
    model, _, _ = _load(path)
    outputs = {o.name for o in model.graph.output}
    norms = [n.output[0] for n in model.graph.node if n.op_type == "LayerNormalization" and n.output[0] in outputs]
    if norms:
        return norms[-1]
    for o in model.graph.output:
        dims = o.type.tensor_type.shape.dim
        if len(dims) == 3 and dims[2].dim_value == hidden:
            return o.name
    raise UserError(f"ONNX file {str(path)!r} has no (batch, length, {hidden}) output to compare with")


@torch.no_grad()
def check_against_onnxruntime(model, path: Path, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> float:
    """Largest absolute difference between the rebuilt model's last hidden state and onnxruntime's, on
    the real tokens of the given batch."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError("the ONNX check needs `onnxruntime` (pip install onnxruntime)") from None
    name = onnx_hidden_output(path, model.config.hidden_size)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": input_ids.numpy().astype(np.int64), "attention_mask": attention_mask.numpy().astype(np.int64)}
    feeds = {i.name: feeds[i.name] for i in session.get_inputs() if i.name in feeds}
    ref = session.run([name], feeds)[0]
    ours = model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state.numpy()
    keep = attention_mask.numpy().astype(bool)
    return float(np.abs(ref - ours)[keep].max())
