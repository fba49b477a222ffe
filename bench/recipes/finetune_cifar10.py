"""Fine-tune ImageNet checkpoints on CIFAR-10 and write local checkpoints the CIFAR-10 suite names.

    python -m bench.recipes.finetune_cifar10 --data-root data/ --out checkpoints/cifar10
    python -m bench.recipes.finetune_cifar10 --model resnet-50 --model vit-b16 --epochs 10 ...

Paper (NE, Sec. 5): "for CIFAR-10, models are fine-tuned for 10 epochs from the ImageNet-1K
checkpoints"; it gives no optimizer, so this uses a common full fine-tuning setup: AdamW
(lr 1e-4, weight decay 0.05, cosine schedule), batch 64, random crop (pad 4) and horizontal
flip at 32 x 32, then each model's own resize + crop + normalization (so training sees what
the suite evaluates), bf16 autocast on CUDA. Every model of `--suite` (default
suites/imagenet.toml; `--model LABEL` picks some) is loaded with 10 classes and trained.

Writes, per model label, `<out>/<label>/` (transformers `save_pretrained`, with its image
processor when it has one) for "hf" models or `<out>/<label>.safetensors` for timm/torch
models, `<out>/<label>.json` (test top-1, settings), and `<out>/models.toml`: the [models]
lines that load them, with each model's preprocessing pinned. Meant for a GPU machine (an
estimate from FLOP counts, not measured: about a minute per epoch for ViT-B at bf16 on one H100,
one to two hours for all ten models); on CPU only the smoke test is practical.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from bench.data import load_dataset
from bench.errors import UserError
from bench.models.sources import load_model, model_label
from bench.recipes.train_classifier import accuracy, augment
from bench.suite import load_suite

CLASSES = 10


def _finetune_spec(spec) -> dict:
    """The suite's spec with a 10-class head (pretrained weights kept, head re-initialised)."""
    if isinstance(spec, str):
        source, _, model = spec.partition(":")
        spec = {"source": source, "model": model}
    spec = dict(spec)
    if spec.get("source") == "zoo":
        raise UserError(f"model {model_label(spec)!r}: zoo models are trained by the harness itself, not fine-tuned")
    if spec.get("source") != "torch":
        spec["num_classes"] = CLASSES
    return spec


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    return json.dumps(str(v))


def _save(adapter, spec: dict, label: str, out: Path, source_model: str) -> dict:
    """Write the checkpoint; return the spec that loads it (preprocessing pinned)."""
    pre = adapter.preprocess
    resize = pre.geometry.resize
    pinned = {"input_size": list(pre.input_size), "mean": list(pre.mean), "std": list(pre.std),
              **({} if resize is None else {"resize": list(resize) if isinstance(resize, tuple) else resize}),
              "interpolation": pre.geometry.interpolation}
    keep = {k: spec[k] for k in ("arch", "trust_remote_code") if k in spec}
    if spec.get("source") == "hf":
        folder = out / label
        adapter.module.model.save_pretrained(folder)
        if spec.get("config") is None:  # hub or local models carry a processor; the pinned facts are the record
            try:
                from transformers import AutoImageProcessor

                trc = bool(spec.get("trust_remote_code"))
                AutoImageProcessor.from_pretrained(source_model, trust_remote_code=trc).save_pretrained(folder)
            except (OSError, ValueError, KeyError):
                pass  # remote-code models keep their preprocessing in the config
        return {"source": "hf", "model": str(folder), "name": label, **keep, **pinned}
    from safetensors.torch import save_file

    path = out / f"{label}.safetensors"
    save_file({k: v.detach().cpu().contiguous() for k, v in adapter.module.state_dict().items()}, str(path))
    loaded = {k: v for k, v in spec.items() if k not in ("pretrained", "init_seed", "checkpoint")}
    return {**loaded, "name": label, "checkpoint": str(path), **pinned}


def finetune(adapter, train, test, *, epochs: int, batch_size: int, lr: float, weight_decay: float, seed: int,
             device: str, progress: bool = True) -> float:
    """Full fine-tuning of adapter.module on `train` (Split, 32x32 pixels); returns test top-1 (%)."""
    module, pre = adapter.module.to(device), adapter.preprocess
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(train.labels) / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s / max(steps, 1), 1.0))))
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)

    def prepare(x: torch.Tensor) -> torch.Tensor:
        return pre(pre.geometry(x))

    bar = tqdm(total=steps, desc=f"fine-tune {adapter.name}", unit="step", disable=not progress)
    for _ in range(epochs):
        module.train()
        order = torch.randperm(len(train.labels), generator=gen)
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            x = augment(train.images[idx].to(device), True, gen)
            with amp:
                loss = F.cross_entropy(module(prepare(x)).float(), train.labels[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    top1 = accuracy(module, test.images, test.labels, prepare, device, batch=256)
    module.to("cpu").eval()
    return top1


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(allow_abbrev=False, prog="python -m bench.recipes.finetune_cifar10", description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="imagenet", help="suite whose models are fine-tuned (default: imagenet)")
    ap.add_argument("--model", action="append", help="only this model label (repeatable)")
    ap.add_argument("--data-root", help="torchvision CIFAR-10 folder (default: the cifar10 suite's root, data/)")
    ap.add_argument("--data-path", help="CIFAR-10 as an .npz (train_images/train_labels/test_images/test_labels)")
    ap.add_argument("--hub", help="CIFAR-10 from the hub, e.g. uoft-cs/cifar10")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--weight-decay", type=float, default=0.05)
    ap.add_argument("--train-subset", type=int, default=0, help="train on a seeded subset of N images (0 = all)")
    ap.add_argument("--test-subset", type=int, default=0, help="report accuracy on a seeded subset (0 = all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("checkpoints/cifar10"))
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)


    suite = load_suite(args.suite)
    specs = {model_label(s): s for s in [*suite.authorized, *suite.evaluated]}
    for m in args.model or []:
        if m not in specs:
            raise UserError(f"model {m!r} is not in suite {suite.name!r}; valid choices: {', '.join(specs)}")
    chosen = [m for m in specs if not args.model or m in args.model]
    data = {"path": args.data_path} if args.data_path else {"hub": args.hub} if args.hub else {"root": args.data_root or "data/"}
    train = load_dataset("cifar10", "train", args.train_subset, args.seed, **data)
    test = load_dataset("cifar10", "test", args.test_subset, args.seed, **data)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    lines = []
    for label in chosen:
        spec = _finetune_spec(specs[label])
        torch.manual_seed(args.seed)
        adapter = load_model(spec, progress=not args.no_progress)
        adapter.name = label
        start = time.time()
        top1 = finetune(adapter, train, test, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                        weight_decay=args.weight_decay, seed=args.seed, device=device, progress=not args.no_progress)
        saved = _save(adapter, spec, label, args.out, str(spec.get("model", "")))
        record = {"label": label, "source_spec": spec, "test_top1": top1, "epochs": args.epochs,
                  "batch_size": args.batch_size, "lr": args.lr, "weight_decay": args.weight_decay,
                  "train_n": len(train.labels), "test_n": len(test.labels), "seed": args.seed, "device": device,
                  "wall_s": time.time() - start}
        (args.out / f"{label}.json").write_text(json.dumps(record, indent=2) + "\n")
        lines.append(f"  {_toml_value(saved)},")
        print(f"{label}: test top-1 {top1:.2f}% ({time.time() - start:.0f}s)", flush=True)
    snippet = args.out / "models.toml"
    snippet.write_text("# written by python -m bench.recipes.finetune_cifar10; paste into a CIFAR-10 suite\n"
                       "[models]\nauthorized = [\n" + "\n".join(lines) + "\n]\n")
    print(f"checkpoints and [models] snippet: {snippet}")
    return snippet


if __name__ == "__main__":
    try:
        main()
    except UserError as e:
        sys.exit(f"error: {e}")
