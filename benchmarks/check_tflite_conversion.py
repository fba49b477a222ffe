"""How far the `tflite` source's float32 torch module is from the integer TFLite runtime (ai-edge-litert).

    PYTHONPATH=. python benchmarks/check_tflite_conversion.py --models-dir DIR --images IMG_OR_DIR ... [--limit 50]

For each `<name>.tflite` in --models (default: Coral's four MobileNet V1/V2 quant files) found in --models-dir,
every image is resized (PIL bilinear, whole image) to the model's input size as uint8 pixels, fed to both
the runtime and the converted module (default float, and the labelled option quantize_activations), and
compared on the logits (the runtime's dequantized input of the final SOFTMAX, read with
experimental_preserve_all_tensors): top-1 agreement (also counting as agreement a class tied with the runtime's
top value on its quantized logits), max and median |logit difference|, the logits' own quantization step. Prints a markdown table and, with --json, writes it with provenance (file sha256s,
package versions). Asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

DEFAULT_MODELS = ("mobilenet_v1_0.25_128_quant", "mobilenet_v1_0.5_160_quant", "mobilenet_v1_0.75_192_quant",
                  "mobilenet_v2_1.0_224_quant")


def _images(items: list[str], limit: int) -> list[Path]:
    out: list[Path] = []
    for item in items:
        p = Path(item)
        out += sorted(f for f in p.iterdir() if f.suffix.lower() in (".jpeg", ".jpg", ".bmp", ".png")) if p.is_dir() else [p]
    return out[:limit] if limit else out


def measure(path: Path, images: list[Path], quantize: bool) -> dict:
    from PIL import Image
    from ai_edge_litert.interpreter import Interpreter

    from bench.models import load_model

    adapter = load_model({"source": "tflite", "path": str(path), "quantize_activations": quantize})
    interp = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True, num_threads=1)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    index = adapter.module.output_index
    detail = next(d for d in interp.get_tensor_details() if d["index"] == index)
    scale, zero = detail["quantization"]
    _, h, w = adapter.preprocess.input_size
    agree, tied, diffs = 0, 0, []
    for f in images:
        q = np.asarray(Image.open(f).convert("RGB").resize((w, h), Image.BILINEAR), dtype=np.uint8)
        x = q[None] if inp["dtype"] == np.uint8 else (q[None].astype(np.int16) - 128).astype(np.int8)
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        ref = (interp.get_tensor(index).astype(np.float64).reshape(-1) - zero) * scale
        mine = adapter.predict(torch.from_numpy(q.copy()).permute(2, 0, 1)[None].float() / 255)[0].double().numpy()
        agree += int(mine.argmax() == ref.argmax())
        tied += int(ref[mine.argmax()] == ref.max())  # the runtime's logits tie at its top value
        diffs.append(float(np.abs(mine - ref).max()))
    return {"n": len(images), "top1_agreement": agree / len(images), "agree": agree, "agree_with_ties": tied,
            "max_abs_logit_diff": max(diffs), "median_max_abs_logit_diff": float(np.median(diffs)),
            "logit_step": float(scale)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    ap.add_argument("--models-dir", required=True)
    ap.add_argument("--models", nargs="*", default=list(DEFAULT_MODELS))
    ap.add_argument("--images", nargs="+", required=True, help="image files or folders")
    ap.add_argument("--limit", type=int, default=0, help="at most this many images (0: all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="write the rows with provenance here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    images = _images(args.images, args.limit)
    rows = []
    for name in args.models:
        path = Path(args.models_dir) / f"{name}.tflite"
        if not path.is_file():
            print(f"skip {name}: {path} not found", file=sys.stderr)
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        for quantize in (False, True):
            rows.append({"model": name, "sha256": digest, "mode": "quantize_activations" if quantize else "float",
                         **measure(path, images, quantize)})
    print("| model | module | images | top-1 agreement | counting runtime ties | max abs logit diff | median per-image max "
          "| logit step |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['mode']} | {r['n']} | {r['agree']}/{r['n']} ({100 * r['top1_agreement']:.1f}%) | "
              f"{r['agree_with_ties']}/{r['n']} | "
              f"{r['max_abs_logit_diff']:.3f} | {r['median_max_abs_logit_diff']:.3f} | {r['logit_step']:.4f} |")
    if args.json:
        import subprocess

        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent)
        provenance = {"git": commit.stdout.strip() or None, "images": [f.name for f in images], "image_sha256": [hashlib.sha256(f.read_bytes()).hexdigest() for f in images],
                      "versions": {p: version(p) for p in ("torch", "tflite", "ai-edge-litert", "pillow")},
                      "python": platform.python_version(), "threads": args.threads}
        Path(args.json).write_text(json.dumps({"rows": rows, "provenance": provenance}, indent=1) + "\n")


if __name__ == "__main__":
    main()
