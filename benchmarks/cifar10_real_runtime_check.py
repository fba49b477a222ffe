"""Clean accuracy of every cifar10-real model on the kit's test images through the model's ORIGINAL
runtime (onnxruntime for ONNX, LiteRT for TFLite), with the preprocessing its manifest spec states.

An independent check of the kit (files, labels, preprocessing) that needs no authbench model source;
the harness's own clean rows come from `authbench run suites/cifar10-real.toml`.

    AUTHBENCH_CACHE=... python benchmarks/cifar10_real_runtime_check.py [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

from bench.cache import cache_root
from bench.kits.manifest import get_kit
from bench.kits.resolve import resolve_dataset, resolve_model


def images(root: Path) -> tuple[np.ndarray, np.ndarray]:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    xs, ys = [], []
    for i, c in enumerate(classes):
        for f in sorted((root / c).iterdir()):
            xs.append(np.asarray(Image.open(f).convert("RGB"), dtype=np.float32) / 255.0)
            ys.append(i)
    return np.stack(xs), np.array(ys)


def predict(spec: dict, x: np.ndarray) -> np.ndarray:
    mean = np.array(spec["mean"], np.float32)
    std = np.array(spec["std"], np.float32)
    z = (x - mean) / std  # NHWC
    if spec["source"] == "onnx":
        import onnxruntime as ort

        s = ort.InferenceSession(spec["path"])
        inp = s.get_inputs()[0]
        feed = z if spec.get("layout") == "nhwc" else z.transpose(0, 3, 1, 2)
        fixed = isinstance(inp.shape[0], int)
        outs = [s.run(None, {inp.name: feed[i:i + 1] if fixed else feed[i:i + 256]})[0]
                for i in range(0, len(feed), 1 if fixed else 256)]
        return np.concatenate(outs).argmax(1)
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=spec["path"])
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    out = []
    for k in range(len(z)):
        it.set_tensor(i["index"], z[k:k + 1].astype(np.float32))
        it.invoke()
        out.append(it.get_tensor(o["index"]).argmax())
    return np.array(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    cache = cache_root()
    kit = get_kit("cifar10-real")
    x, y = images(Path(resolve_dataset("kit:cifar10-real/test", cache).options["root"]))
    rows = {}
    for name, model in kit.models.items():
        spec = resolve_model(f"kit:cifar10-real/{name}", cache).spec
        acc = float((predict(spec, x) == y).mean())
        rep = model.reported
        rows[name] = {"top1": 100 * acc, "n": int(len(y)), "runtime": spec["source"],
                      "reported": rep.value if rep else None, "reported_citation": rep.citation if rep else None}
        print(f"{name:22s} {100 * acc:6.2f}%   source: {rep.value if rep else '-'}")
    if args.out:
        args.out.write_text(json.dumps({"kit": kit.name, "manifest": kit.digest, "models": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
