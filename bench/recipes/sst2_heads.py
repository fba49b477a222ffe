"""Seeded SST-2 classification heads on frozen pretrained text encoders (the `sst2-real` kit's models).

Recipe: the encoder stays frozen; each of the first `train_rows` rows of SST-2 train is encoded once
(pooled last hidden state: mean over real tokens, or [CLS]), and an L2-regularised logistic regression
(scikit-learn, lbfgs, C = 1.0, features standardised inside the fit) is trained on those vectors. The
fitted classifier is folded into one nn.Linear(d, 2) (logits [-z/2, z/2] for the decision value z:
the same argmax and softmax), saved to `<cache>/heads/<digest>.pt` with its record, and reused.
Everything is deterministic for a given seed (the seed picks nothing else: the rows are the first
`train_rows`, lbfgs has no randomness), so the head and its digest reproduce exactly on CPU.

    python -m bench.recipes.sst2_heads --kit sst2-real --model minilm-l6   # train (or load) + dev accuracy

CPU cost: encoding 6,000 short SST-2 phrases with MiniLM-L6 at max length 64 takes a few minutes on
one thread; the fit takes seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from bench.errors import UserError
from bench.kits.manifest import get_kit
from bench.kits.resolve import resolve_dataset, resolve_model
from bench.text.heads import HeadSpec, dev_accuracy, train_or_load_head  # noqa: F401  (the recipe's public names)
from bench.text.pooled import load_pooled


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.recipes.sst2_heads", description=__doc__.splitlines()[0])
    ap.add_argument("--kit", default="sst2-real")
    ap.add_argument("--model", action="append", help="kit model(s) (default: all of the kit)")
    ap.add_argument("--cache-dir", type=Path)
    ap.add_argument("--out", type=Path, help="write the records (head + dev accuracy) as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    try:
        kit = get_kit(args.kit)
        dev = resolve_dataset(f"kit:{kit.name}/dev", args.cache_dir).options["path"]
        records = {}
        for name in args.model or list(kit.models):
            spec = resolve_model(f"kit:{kit.name}/{name}", args.cache_dir).spec
            model, tokenizer, record = load_pooled(name, spec, args.cache_dir)
            acc = dev_accuracy(model.eval(), tokenizer, dev, int(spec.get("max_length", 64)))
            records[name] = {**record, "dev_accuracy": acc, "dev": "GLUE SST-2 dev (872)"}
            print(f"{name}: head {record.get('digest')} ({record.get('rows')} training rows), SST-2 dev accuracy "
                  f"{100 * acc:.2f}%")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.out:
        args.out.write_text(json.dumps(records, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
