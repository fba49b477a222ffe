"""NE on vision-language models, MMBench through VLMEvalKit: the `mmbench` protocol (NE Table 4).

The released artifact of an NE job is one 8-bit PNG per MMBench image (circular copies share
their image), at the authorized model's canvas, written under <out>/released/. Every evaluated
model answers VLMEvalKit's prompt with that image; predictions are cached per (model identity,
image bytes, prompt), so a rerun or an added unauthorized model recomputes nothing already
answered. Jobs: one clean job, and one per (NE point, authorized model); each scores every
evaluated model. Rows: metrics.top1 = Overall x 100, plus every capability group.
"""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from bench.cache import atomic_write_bytes, digest
from bench.core.entry import string
from bench.core.types import Encoding, Job, Measurement, Role
from bench.errors import UserError
from bench.models.adapter import weights_digest
from bench.protocols.base import PROTOCOLS, Protocol, grid, with_cells
from bench.reports.ne_tasks import render_mmbench_tables, task_summary
from bench.vlm.mmbench import PredictionCache, evaluate, file_sha, load_mmbench, message_for
from bench.vlm.ne import VLMNE, patch_deviation
from bench.vlm.profiles import profile_for
from bench.vlm.vlmeval_import import import_vlmeval

CELL_FIELDS = {"benchmark": "mmbench", "task": "mmbench"}


def load_vlm(spec: dict, progress: bool = False):
    """A VLMEvalKit model by its VLMEvalKit name (spec "vlmeval", default the label), kwargs from "kwargs"."""
    config = import_vlmeval("vlmeval.config")
    name = spec.get("vlmeval", spec["name"])
    if name not in config.supported_VLM:
        raise UserError(f"VLMEvalKit has no model {name!r}; see vlmeval.config.supported_VLM")
    return config.supported_VLM[name](**spec.get("kwargs", {}))


class VLMState:
    """What one context keeps for MMBench: loaded models, identities, the dataset, the prediction cache."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.cache = PredictionCache(ctx.cache_root)
        self.encoded = ctx.cache_root / "vlm-encoded"
        self.specs = {label: (s if isinstance(s, dict) else {"name": s}) for label, s in ctx.specs.items()}
        self.profiles = {label: profile_for(spec) for label, spec in self.specs.items()}
        self.models: dict = {}
        self.identities: dict = {}
        self.released: dict = {}
        self._dataset = None
        self._clean = None

    def model(self, label: str):
        """The VLM `label`, loaded once; its torch module (when it exposes one) moved to the run's device."""
        if label not in self.models:
            model = (self.ctx.options.loader or load_vlm)(self.specs[label], self.ctx.progress)
            module = getattr(model, "model", model)
            if isinstance(module, torch.nn.Module):
                module.to(self.ctx.device)
            self.models[label] = model
        return self.models[label]

    def module(self, label: str):
        m = self.model(label)
        return getattr(m, "model", m)

    def identity(self, label: str) -> dict:
        """VLMEvalKit name, kwargs and a digest of the weights (or the model's own `identity`), computed once."""
        if label not in self.identities:
            m = self.model(label)
            self.identities[label] = getattr(m, "identity", None) or {
                "vlmeval": self.specs[label].get("vlmeval", label), "kwargs": self.specs[label].get("kwargs", {}),
                "weights": weights_digest(self.module(label))}
        return self.identities[label]

    def dataset(self):
        if self._dataset is None:
            data = self.ctx.suite.data
            name = str(data.get("name") or "MMBench_DEV_EN")
            root = data.get("root")  # --data-root: <root>/<name>.tsv
            dataset = load_mmbench(str(data.get("path") or (Path(root) / f"{name}.tsv" if root else name)))
            self._subset(dataset)
            self._dataset = dataset
        return self._dataset

    def _subset(self, dataset) -> None:
        """Keep a seeded subset of `subset` questions (with all their circular copies); 0 keeps all."""
        data = self.ctx.suite.data
        n = int(data.get("subset", 0))
        groups = np.unique([int(i) % 1_000_000 for i in dataset.data["index"]])
        if 0 < n < len(groups):
            seed = int(data.get("subset_seed", self.ctx.suite.seed))
            keep = set(np.random.default_rng(seed).choice(groups, n, replace=False))
            dataset.data = dataset.data[[int(i) % 1_000_000 in keep for i in dataset.data["index"]]]

    def clean_images(self) -> dict[int, str]:
        """group index -> the clean image file VLMEvalKit decodes for it."""
        if self._clean is None:
            dataset, out = self.dataset(), {}
            for i in range(len(dataset.data)):
                line = dataset.data.iloc[i]
                g = int(line["index"]) % 1_000_000
                if g not in out:
                    out[g] = dataset.dump_image(line)[0]
            self._clean = out
        return self._clean

    def release(self, auth: str, params: dict, out_dir: Path) -> tuple[dict[int, str], dict]:
        """Encode every image for `auth` (or take it from the encoding cache) and write the released PNGs."""
        key = digest([auth, params])
        if key in self.released:
            return self.released[key]
        folder = out_dir / "released" / auth / digest(params)[:12]
        folder.mkdir(parents=True, exist_ok=True)
        ne, paths, stats, seed = None, {}, [], self.ctx.suite.seed
        for g, path in tqdm(self.clean_images().items(), desc=f"NE for {auth}", disable=not self.ctx.progress,
                            leave=False):
            k = digest({"auth": self.identity(auth), "params": params, "seed": seed, "image": file_sha(path)})
            png, meta = self.encoded / k[:2] / f"{k}.png", self.encoded / k[:2] / f"{k}.json"
            try:
                data, s = png.read_bytes(), json.loads(meta.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                if ne is None:
                    ne = VLMNE(**params)
                    ne.fit(self.module(auth), self.profiles[auth])
                image, s = ne.encode(Image.open(path), g, seed)
                buf = io.BytesIO()
                image.save(buf, format="PNG")
                data = buf.getvalue()
                atomic_write_bytes(png, data)
                atomic_write_bytes(meta, json.dumps(s).encode())
            paths[g] = str(folder / f"{g}.png")
            atomic_write_bytes(Path(paths[g]), data)
            stats.append(s)
        summary = {k: float(np.mean([s[k] for s in stats])) for k in ("psnr_true", "auth_dev", "encode_ms")}
        summary["subspace_dim"] = int(np.mean([s["subspace_dim"] for s in stats]))
        self.released[key] = (paths, summary)
        return self.released[key]

    def answer(self, label: str, images: dict[int, str]) -> dict[int, str]:
        dataset = self.dataset()
        model, ident, out = self.model(label), self.identity(label), {}
        shas = {g: file_sha(p) for g, p in images.items()}
        for i in tqdm(range(len(dataset.data)), desc=f"{label} answers", disable=not self.ctx.progress, leave=False):
            line = dataset.data.iloc[i]
            g = int(line["index"]) % 1_000_000
            message = message_for(model, dataset, line, images[g])

            def generate():
                with torch.no_grad():
                    return str(model.generate(message=message, dataset=dataset.dataset_name))

            out[int(line["index"])] = self.ctx.forwards.answer(self.cache, self.cache.key(ident, shas[g], message),
                                                               generate)
        return out


@PROTOCOLS.register
class MMBench(Protocol):
    name = "mmbench"
    description = "NE on vision-language models: MMBench through VLMEvalKit (Table 4)"
    owns_dataset = "mmbench"
    data_keys = {"name": string(), "path": string(), "root": string(), "judge": string()}

    def summary(self, rows, reports):
        return task_summary(reports)

    def state(self, ctx) -> VLMState:
        memo = ctx.memo("mmbench")
        if "state" not in memo:
            memo["state"] = VLMState(ctx)
        return memo["state"]

    def job(self, ctx, **fields) -> Job:
        job = Job(protocol=self.name, attack="none", release=fields.pop("release", "uint8"),
                  evaluated=tuple(dict.fromkeys([*ctx.authorized, *ctx.evaluated, *ctx.specs])),
                  extra={"cell_fields": CELL_FIELDS}, group=fields.get("authorized", ""), **fields)
        if ctx.options.models:
            job = replace(job, evaluated=tuple(e for e in job.evaluated if e in ctx.options.models))
        return with_cells(ctx, job)

    def baseline(self, ctx):
        return [self.job(ctx, defense="none", params={}, point={}, release="clean", authorized="")]

    def plan(self, ctx, entry):
        if entry.name != VLMNE.name:
            raise UserError(f"suite {ctx.suite.name!r}: MMBench suites take defense {VLMNE.name!r}, got {entry.name!r}")
        return [self.job(ctx, defense=VLMNE.name, params=VLMNE(**{**entry.params, **point}).params, point=dict(point),
                         authorized=a) for point in grid(entry.sweep) for a in ctx.authorized]

    def run(self, ctx, job):
        state = self.state(ctx)
        out_dir = Path(ctx.out_dir)
        dataset = state.dataset()
        clean = state.clean_images()
        out = []
        for e, key in zip(job.evaluated, job.cells):
            if key in ctx.done:
                continue
            encoding, dev = None, None
            if job.defense == "none":
                images = clean
            else:
                images, enc = state.release(job.authorized, job.params, out_dir)
                encoding = Encoding(**enc)
                dev = float(np.mean([patch_deviation(state.module(e), state.profiles[e], Image.open(clean[g]),
                                                     Image.open(images[g])) for g in clean]))
            preds = state.answer(e, images)
            scores = evaluate(dataset, preds, out_dir / "vlmeval" / key, str(ctx.suite.data.get("judge", "exact_matching")))
            a = job.authorized
            out.append(Measurement(
                evaluated=e, role=Role.of(authorized=a, evaluated=e,
                                          same_arch=bool(a) and state.profiles[e].family == state.profiles[a].family),
                arch={"authorized": state.profiles[a].family if a else "", "evaluated": state.profiles[e].family},
                metrics={**scores, "top1": 100.0 * scores["Overall"], "first_layer_dev": dev}, encoding=encoding,
                n=len(dataset.data), model_digest=digest(state.identity(e)),
                authorized_digest=digest(state.identity(a)) if a else None,
                input_digest=digest(sorted(file_sha(p) for p in images.values()))))
        return out

    def reports(self, rows, out, cfg):
        return render_mmbench_tables(rows, out, cfg)
