"""Fine-tune a transformers encoder on one GLUE task and save it as a local checkpoint folder.

    python -m bench.recipes.finetune_glue --model roberta-base --task qqp --out checkpoints/roberta-base-qqp

Defaults follow the usual BERT/RoBERTa GLUE recipe (3 epochs, AdamW lr 2e-5, batch 32, linear
decay with 6% warm-up, max length 128). The folder holds the model and its tokenizer and is a
valid `checkpoints = { task = "<folder>" }` entry of suites/glue.toml. GPU time (estimate): about
1-2 h for QQP or MNLI on one recent GPU, minutes for the small tasks.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from bench.text.glue import load_glue, score


def finetune(model_name: str, task: str, out: Path, *, epochs: float = 3.0, lr: float = 2e-5, batch_size: int = 32,
             max_length: int = 128, train_file: str | None = None, eval_file: str | None = None, seed: int = 0,
             progress: bool = True) -> dict:
    """Train, save to `out`, return the official metrics on the evaluation split."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

    torch.manual_seed(seed)
    train = load_glue(task, train_file, split=None if train_file else "train")
    evaluation = load_glue(task, eval_file)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = AutoTokenizer.from_pretrained(model_name)
    model = AutoModelForSequenceClassification.from_pretrained(model_name, num_labels=train.task.num_labels).to(device)

    def batch(split, idx):
        enc = tokenizer([split.text_a[i] for i in idx], [split.text_b[i] for i in idx] if split.text_b else None,
                        padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        return {k: v.to(device) for k, v in enc.items()}

    steps = int(np.ceil(len(train) / batch_size) * epochs)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = get_linear_schedule_with_warmup(opt, int(0.06 * steps), steps)
    rng = np.random.default_rng(seed)
    model.train()
    bar = tqdm(total=steps, desc=f"fine-tune {model_name} on {task}", disable=not progress)
    done = 0
    while done < steps:
        for idx in np.array_split(rng.permutation(len(train)), max(1, len(train) // batch_size)):
            if done == steps:
                break
            labels = torch.tensor(train.labels[idx], device=device)
            loss = model(**batch(train, idx), labels=labels.float() if train.task.num_labels == 1 else labels).loss
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad()
            done += 1
            bar.update(1)
    bar.close()
    model.eval()
    with torch.no_grad():
        logits = np.concatenate([model(**batch(evaluation, idx)).logits.float().cpu().numpy()
                                 for idx in np.array_split(np.arange(len(evaluation)), max(1, len(evaluation) // 64))])
    out = Path(out)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return score(evaluation.task, logits, evaluation.labels)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(allow_abbrev=False, prog="python -m bench.recipes.finetune_glue", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="hub name or local folder of a pretrained encoder")
    p.add_argument("--task", required=True, help="GLUE task: cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli; or ag_news")
    p.add_argument("--out", type=Path, required=True, help="checkpoint folder to write")
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--train-file", help="local training file (.tsv/.csv/.jsonl) instead of the hub")
    p.add_argument("--eval-file", help="local evaluation file instead of the hub")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    metrics = finetune(a.model, a.task, a.out, epochs=a.epochs, lr=a.lr, batch_size=a.batch_size,
                       max_length=a.max_length, train_file=a.train_file, eval_file=a.eval_file, seed=a.seed)
    print({k: v for k, v in metrics.items()})


if __name__ == "__main__":
    main()
