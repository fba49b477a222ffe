"""GLUE + NE for text on tiny BERT/RoBERTa built from configs, with tokenizers and GLUE files made here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

transformers = pytest.importorskip("transformers")

from bench.cli import main  # noqa: E402
from bench.core.errors import UserError  # noqa: E402
from bench.recipes.finetune_glue import finetune  # noqa: E402
from bench.core.results import read_rows  # noqa: E402
from bench.suite import load_suite  # noqa: E402
from bench.text.glue import get_task, load_glue, score  # noqa: E402
from conftest import make_engine, validate_rows  # noqa: E402

WORDS = "the a cat dog sat ran on mat fast slow good bad movie film is was very not really big small red blue".split()
HIDDEN, NULL_DIMS, MAX_LEN = 32, 8, 24


def _sentences(rng, n):
    return [" ".join(rng.choice(WORDS, rng.integers(3, 9))) for _ in range(n)]


@pytest.fixture(scope="module")
def glue_files(tmp_path_factory):
    root, rng = tmp_path_factory.mktemp("glue"), np.random.default_rng(0)
    cola = pd.DataFrame({"sentence": _sentences(rng, 40), "label": rng.integers(0, 2, 40), "idx": range(40)})
    stsb = pd.DataFrame({"sentence1": _sentences(rng, 30), "sentence2": _sentences(rng, 30),
                         "label": rng.uniform(0, 5, 30).round(2), "idx": range(30)})
    cola.to_csv(root / "cola.tsv", sep="\t", index=False)
    stsb.to_csv(root / "stsb.tsv", sep="\t", index=False)
    return {"cola": root / "cola.tsv", "stsb": root / "stsb.tsv"}


def _bert_tokenizer(folder):
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    return transformers.BertTokenizerFast(vocab_file=str(vocab))


def _roberta_tokenizer(folder):
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator([" ".join(WORDS)] * 4, vocab_size=300, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False)
    bpe.save_model(str(folder))
    return transformers.RobertaTokenizerFast(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"))


def _with_nullspace(model, seed):
    """Give the first QKV projection an exact NULL_DIMS-dim nullspace (a stand-in for the flat low end of a
    trained model's spectrum), so 'authorized deviation ~ 0' is checkable on a random tiny model."""
    q, _ = torch.linalg.qr(torch.randn(HIDDEN, NULL_DIMS, generator=torch.Generator().manual_seed(seed)))
    proj = torch.eye(HIDDEN) - q @ q.T
    attn = model.base_model.encoder.layer[0].attention.self
    with torch.no_grad():
        for lin in (attn.query, attn.key, attn.value):
            lin.weight.copy_(lin.weight @ proj)


def _build(folder, family, num_labels, seed):
    torch.manual_seed(seed)
    common = dict(hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                  num_labels=num_labels, initializer_range=0.2)
    if family == "bert":
        tok = _bert_tokenizer(folder)
        model = transformers.BertForSequenceClassification(
            transformers.BertConfig(vocab_size=tok.vocab_size, max_position_embeddings=64, **common))
    else:
        tok = _roberta_tokenizer(folder)
        model = transformers.RobertaForSequenceClassification(
            transformers.RobertaConfig(vocab_size=len(tok), max_position_embeddings=MAX_LEN + 4, pad_token_id=1, **common))
    _with_nullspace(model, seed)
    tok.save_pretrained(folder)
    model.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def text_cache(tmp_path_factory):
    """One forward cache for the module: later runs of the same models and inputs reuse it."""
    return tmp_path_factory.mktemp("text-cache")


@pytest.fixture(scope="module")
def suite_file(tmp_path_factory, glue_files):
    root = tmp_path_factory.mktemp("models")
    ckpt = {}
    for family in ("bert", "roberta"):
        for task, labels in (("cola", 2), ("stsb", 1)):
            folder = root / f"{family}-{task}"
            folder.mkdir()
            ckpt[(family, task)] = _build(folder, family, labels, seed=len(ckpt))
    text = f"""
[suite]
name = "glue-tiny"
seed = 0
[data]
dataset = "glue"
tasks = ["cola", "stsb"]
files = {{ cola = "{glue_files['cola']}", stsb = "{glue_files['stsb']}" }}
[models]
authorized = [
  {{ name = "bert", max_length = {MAX_LEN}, checkpoints = {{ cola = "{ckpt[('bert', 'cola')]}", stsb = "{ckpt[('bert', 'stsb')]}" }} }},
  {{ name = "roberta", max_length = {MAX_LEN}, checkpoints = {{ cola = "{ckpt[('roberta', 'cola')]}", stsb = "{ckpt[('roberta', 'stsb')]}" }} }},
]
[[defenses]]
name = "ne-text"
params = {{ dims = {NULL_DIMS}, snr_db = 0.0 }}
release = ["embedding", "embedding-clean"]
"""
    path = tmp_path_factory.mktemp("suite") / "glue-tiny.toml"
    path.write_text(text)
    return path


def test_official_metrics():
    labels = np.array([1, 1, 0, 0, 1, 0])
    logits = np.eye(2)[[1, 0, 0, 1, 1, 0]]
    cola = score(get_task("CoLA"), logits, labels)  # tp=2 fn=1 tn=2 fp=1 -> mcc = (4 - 1) / 9
    assert cola["matthews"] == pytest.approx(1 / 3) and cola["top1"] == pytest.approx(100 / 3)
    stsb = score(get_task("sts-b"), np.array([[1.0], [2.0], [3.0], [5.0]]), np.array([1.0, 2.0, 3.0, 4.0]))
    assert stsb["spearman"] == pytest.approx(1.0) and 0.95 < stsb["pearson"] < 1.0 and stsb["primary"] == "pearson"
    qqp = score(get_task("qqp"), np.eye(2)[[1, 1, 0]], np.array([1, 0, 0]))
    assert qqp["f1"] == pytest.approx(2 / 3) and qqp["accuracy"] == pytest.approx(2 / 3)


def test_glue_file_errors(tmp_path):
    bad = tmp_path / "rte.tsv"
    pd.DataFrame({"sentence1": ["a"], "label": [0]}).to_csv(bad, sep="\t", index=False)
    with pytest.raises(UserError, match="lacks column"):
        load_glue("rte", str(bad))
    with pytest.raises(UserError, match="unknown GLUE task"):
        load_glue("squad", str(bad))


def test_text_ne_suite(suite_file, text_cache, tmp_path):
    suite = load_suite(str(suite_file))
    out, cache = tmp_path / "run", text_cache
    summary = make_engine(suite, out, cache_dir=cache, progress=False, batch_size=16).run()
    rows = read_rows(summary.results)
    assert summary.cells_run == len(rows) == 2 * (2 + 2 * 2 * 2)
    validate_rows(rows)
    by = {(r["task"], r["release"], r["authorized"], r["evaluated"]): r for r in rows}
    for task, metric in (("cola", "matthews"), ("stsb", "spearman")):
        for auth, other in (("bert", "roberta"), ("roberta", "bert")):
            own = by[(task, "embedding", auth, auth)]
            cross = by[(task, "embedding", auth, other)]
            assert own["role"] == "authorized" and cross["role"] == "unauthorized"
            assert metric in own["metrics"]
            # NE: the authorized first QKV projection barely moves; the other model's does
            assert own["metrics"]["first_layer_dev"] < 1e-5
            assert cross["metrics"]["first_layer_dev"] > 0.05
            assert abs(own["encoding"]["snr_db"]) < 1e-3
            # the entry point is exact: a model fed its own clean embedding output scores its clean baseline
            control = by[(task, "embedding-clean", auth, auth)]
            assert control["metrics"]["top1"] == pytest.approx(by[(task, "clean", "", auth)]["metrics"]["top1"], abs=1e-9)
    again = make_engine(suite, out, cache_dir=cache, progress=False).run()
    assert again.cells_run == 0 and again.forwards == 0
    fresh = make_engine(suite, tmp_path / "run2", cache_dir=cache, progress=False).run()
    assert fresh.cells_run == len(rows) and fresh.forwards == 0  # every forward pass comes from the cache
    assert all(r["encoding"]["snr_db"] is not None for r in read_rows(fresh.results) if r["release"] == "embedding")
    # `authbench report` renders Table 7 from the rows, with the paper's values only where labels map to them
    assert main(["report", str(out), "--out", str(tmp_path / "rep")]) == 0
    table = (tmp_path / "rep" / "table7_glue.md").read_text()
    assert "NE (authorized)" in table and "Unauthorized (release for roberta)" in table and "(reported)" not in table
    assert f"{by[('cola', 'clean', '', 'bert')]['metrics']['top1']:.1f}" in table


def test_table7_reported_rows(suite_file, text_cache, tmp_path):
    text = suite_file.read_text() + '\n[report]\npaper_models = { bert = "BERT-base" }\n'
    path = tmp_path / "glue-tiny.toml"
    path.write_text(text)
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--reports", str(tmp_path / "rep"),
                 "--cache-dir", str(text_cache), "--no-progress"]) == 0
    table = (tmp_path / "rep" / "table7_glue.md").read_text()
    measured, reported = table.split("## Reported by the paper (not measured here)")
    assert "54.2" in reported and "Table 7" in reported and "(reported)" not in measured  # BERT-base CoLA baseline
    assert main(["run", str(path), "--psnr", "20", "--out", str(tmp_path / "run")]) == 2


def test_finetune_recipe(suite_file, glue_files, tmp_path):
    bert = load_suite(str(suite_file)).authorized[0]["checkpoints"]["cola"]
    metrics = finetune(bert, "cola", tmp_path / "ft", epochs=1, batch_size=8, max_length=MAX_LEN,
                       train_file=str(glue_files["cola"]), eval_file=str(glue_files["cola"]), progress=False)
    assert "matthews" in metrics and (tmp_path / "ft" / "config.json").exists()
    assert transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path / "ft").num_labels == 2


def test_unknown_model_and_release(suite_file, tmp_path):
    suite = load_suite(str(suite_file))
    with pytest.raises(UserError, match="not in suite"):
        make_engine(suite, tmp_path, models=["gpt"], progress=False)
    suite.defenses[0].raw["release"] = ["uint8"]  # the entry as read: its protocol parses it when planning
    with pytest.raises(UserError, match="unknown release"):
        make_engine(suite, tmp_path, progress=False)


def test_label_order(suite_file):
    from bench.text.adapter import load_text_model

    path = load_suite(str(suite_file)).authorized[0]["checkpoints"]["cola"]
    plain = load_text_model("b", {"checkpoints": {"cola": path}, "max_length": MAX_LEN}, "cola")
    flipped = load_text_model("b", {"checkpoints": {"cola": path}, "max_length": MAX_LEN, "label_order": {"cola": [1, 0]}},
                              "cola")
    batch = plain.tokenize(["the cat sat", "a dog ran fast"], None)
    assert np.array_equal(plain.logits(batch)[:, ::-1], flipped.logits(batch))
    assert plain.digest != flipped.digest  # a different label order is a different model identity (cache key)
    with pytest.raises(UserError, match="permutation"):
        load_text_model("b", {"checkpoints": {"cola": path}, "label_order": {"cola": [0, 0]}}, "cola")
