"""A third-party protocol and a defense that names it, kept runnable (docs/engine.md, "Adding a protocol").

The protocol scores how many test samples each evaluated model gets right after its defense
"releases" them unchanged; it is a minimal, complete example of plan / run / reports.
"""

from bench.core.types import Job, Measurement, Role
from bench.defenses.base import Defense
from bench.protocols import Protocol, classify
from bench.protocols.base import with_cells


class Identity(Defense):
    name = "identity-release"
    description = "releases the data unchanged (example defense of a third-party protocol)"
    protocol = "protocol_example:CountCorrect"


class CountCorrect(Protocol):
    name = "protocol_example:CountCorrect"
    description = "counts correct predictions on the released (here: unchanged) test split"

    def plan(self, ctx, entry):
        return [with_cells(ctx, Job(protocol=self.name, defense=entry.name, params={}, point={}, release="plain",
                                    attack="none", authorized="", evaluated=tuple(ctx.evaluated)))]

    def run(self, ctx, job):
        models = {e: ctx.model(e) for e in job.evaluated}
        no_dev = {e: (lambda x, clean, positions=None: [float("nan")] * len(x)) for e in models}
        outs = classify.stream(ctx, models, no_dev, lambda b: (b.images.to(ctx.device), None), "count")
        out = []
        for e in job.evaluated:
            metrics, n = classify.score(outs[e], ctx.data.labels)
            out.append(Measurement(evaluated=e, role=Role.CLEAN, arch={"authorized": "", "evaluated": models[e].arch},
                                   metrics={**metrics, "correct": int(round(metrics["top1"] * n / 100))}, n=n,
                                   model_digest=models[e].digest))
        return out
