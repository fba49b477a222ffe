"""Bad input (issue 14): every case exits 2 with one stderr line naming the bad value, no traceback, and
leaves an already finished run's results file byte-identical.

One small run (one zoo model, 24 test images, the noise control at one point) is made once for the
module; every case then points `--out` at that run folder, so a case that ran anything would change it.
Most cases fail in suite validation (bench.suite_schema) before anything is loaded.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main

ROOT = Path(__file__).resolve().parent.parent

BASE = """[suite]
name = "bad-input"
seed = 0

[data]
dataset = "digits"
split = "test"
subset = 24

[models]
authorized = [{ source = "zoo", model = "mlp-s0", epochs = 4 }]

[[defenses]]
name = "noise"
psnr = [20]
release = ["float"]

[check]
default_tolerance = 1.0

[report]
psnr = [20]
"""

NPZ_DATA = '[data]\ndataset = "cifar10"\nsplit = "test"\npath = "{npz}"\n'
RGB_MODEL = ('authorized = [{ source = "torch", factory = "models_example:rgb_cnn", mean = [0.5], std = [0.25], '
             'input_size = [3, 32, 32], name = "rgb", init_seed = 0 }]')
ENTRY = 'name = "noise"\npsnr = [20]\nrelease = ["float"]'


def edit(old: str, new: str):
    assert old in BASE, old
    return ("suite", BASE.replace(old, new, 1))


def add(text: str):
    return ("suite", BASE + "\n" + text + "\n")


def entry(text: str):
    """The [[defenses]] entry replaced by `text`."""
    return edit(ENTRY, text)


def npz(name: str):
    """The suite on the .npz fixture `name` (written by the `files` fixture) with a 3-channel model."""
    text = BASE.replace('[data]\ndataset = "digits"\nsplit = "test"\nsubset = 24\n', NPZ_DATA.format(npz=f"@{name}@"))
    return ("suite", text.replace('authorized = [{ source = "zoo", model = "mlp-s0", epochs = 4 }]', RGB_MODEL))


def model(spec: str):
    return edit('authorized = [{ source = "zoo", model = "mlp-s0", epochs = 4 }]', f"authorized = [{spec}]")


def argv(*args: str):
    return ("argv", list(args))


def flags(case, *args: str):
    """A suite case run with extra `authbench run` flags."""
    return ("suite+", (case[1], list(args)))


# (case id, how to run it, a substring the one error line must contain: it names the bad key or value)
CASES = [
    # -- unknown keys: every section names its valid keys ------------------------------------------------
    ("unknown-section", add("[modles]\nauthorized = []"), "unknown section 'modles'; valid sections: check, data"),
    ("suite-key", edit('seed = 0', 'seed = 0\nnmae = "x"'), "unknown key 'nmae' in [suite]; valid: description, name, seed"),
    ("data-key", edit('subset = 24', 'subset = 24\nsubst = 10'), "unknown key 'subst' in [data]"),
    ("models-key", edit('[models]', '[models]\nevalutaed = ["zoo:mlp-s1"]'),
     "unknown key 'evalutaed' in [models]; valid: authorized, evaluated, python_path"),
    ("defense-key", entry(ENTRY + "\nparms = { tau = 1e-4 }"), "unknown key 'parms' in [[defenses]] #1; valid: attacks"),
    ("check-key", edit("default_tolerance = 1.0", "tolerence = { auth_gap = 1.5 }"),
     "unknown key 'tolerence' in [check]; valid: default_tolerance, inference_tolerance, tolerance, trials"),
    ("report-key", edit("[report]\npsnr = [20]", "[report]\npsnrs = [20]"), "unknown key 'psnrs' in [report]"),
    ("run-key", add("[run]\nbatchsize = 8"), "unknown key 'batchsize' in [run]; valid: batch_size, channels_last, device, precision, threads"),
    ("executor-key", add("[executor]\nnmae = \"ray\""), "unknown key 'nmae' in [executor]"),
    ("suspects-key", add("[suspects]\npositivs = [\"finetune(all)\"]"), "unknown key 'positivs' in [suspects]"),
    ("table3-key", add("[report.table3]\nne = \"ne-patch\"\npsnr_db = 20"), "[report] table3"),
    ("tolerance-metric", edit("default_tolerance = 1.0", "tolerance = { auth_gapp = 1.5 }"), "auth_gapp"),
    ("model-spec-key", model('{ source = "zoo", model = "mlp-s0", epoch = 4 }'), "epoch"),
    ("glue-data-key", edit('dataset = "digits"\nsplit = "test"', 'dataset = "glue"\ntaks = ["sst2"]'),
     "unknown key 'taks' in [data] for dataset 'glue'"),
    ("mmbench-data-key", edit('dataset = "digits"\nsplit = "test"', 'dataset = "mmbench"\njudeg = "exact"'),
     "unknown key 'judeg' in [data] for dataset 'mmbench'"),
    ("dataset-option", edit('subset = 24', 'subset = 24\nresolutoin = 32'), "unknown key 'resolutoin' in [data] for dataset 'digits'"),
    # -- value types and ranges ---------------------------------------------------------------------------
    ("psnr-string", entry('name = "noise"\npsnr = "abc"'), "psnr = 'abc'"),
    ("psnr-list-string", entry('name = "noise"\npsnr = [20, "abc"]'), "'abc'"),
    ("seed-string", edit("seed = 0", 'seed = "abc"'), "[suite] seed = 'abc'"),
    ("seed-negative", edit("seed = 0", "seed = -3"), "[suite] seed = -3"),
    ("seed-float", edit("seed = 0", "seed = 1.5"), "[suite] seed = 1.5"),
    ("subset-string", edit("subset = 24", 'subset = "ten"'), "[data] subset = 'ten'"),
    ("subset-negative", edit("subset = 24", "subset = -1"), "[data] subset = -1"),
    ("subset-float", edit("subset = 24", "subset = 2.5"), "[data] subset = 2.5"),
    ("subset-seed", edit("subset = 24", 'subset = 24\nsubset_seed = "x"'), "[data] subset_seed = 'x'"),
    ("dataset-number", edit('dataset = "digits"', "dataset = 5"), "[data] dataset = 5"),
    ("split-number", edit('split = "test"', "split = 1"), "[data] split = 1"),
    ("encode-space", edit("subset = 24", 'subset = 24\nencode_space = "latent"'), "encode_space = 'latent'"),
    ("trials-zero", entry(ENTRY + "\ntrials = 0"), "trials = 0"),
    ("trials-string", entry(ENTRY + '\ntrials = "3"'), "trials = '3'"),
    ("tier", entry(ENTRY + '\ntier = "fast"'), "tier = 'fast'"),
    ("psnr-mode", entry(ENTRY + '\npsnr_mode = "nominal"'), "psnr_mode = 'nominal'"),
    ("release-number", entry('name = "noise"\npsnr = [20]\nrelease = 3'), "release = 3"),
    ("attacks-empty", entry(ENTRY + "\nattacks = []"), "attacks is empty"),
    ("attacks-number", entry(ENTRY + "\nattacks = [3]"), "attacks = [3]"),
    ("attack-without-name", entry(ENTRY + "\nattacks = [{ quality = 75 }]"), "{'quality': 75}"),
    ("sweep-not-table", entry(ENTRY + "\nsweep = 3"), "sweep = 3"),
    ("sweep-empty-list", entry('name = "ne-patch"\npsnr = [20]\nsweep = { tau = [] }'), "sweep = {'tau': []}"),
    ("params-not-table", entry(ENTRY + "\nparams = 3"), "params = 3"),
    ("entry-models-number", entry(ENTRY + "\nmodels = [3]"), "models = [3]"),
    ("entry-no-name", entry('psnr = [20]'), "[[defenses]] #1 needs 'name'"),
    ("defenses-table", ("suite", BASE.replace("[[defenses]]", "[defenses]")), "[defenses] must be a list of [[defenses]] tables"),
    ("defenses-missing", ("suite", BASE.split("[[defenses]]")[0]), "missing [defenses] section"),
    ("models-missing", ("suite", BASE.replace("[models]\n", "[modelz]\n")), "unknown section 'modelz'"),
    ("dataset-missing", edit('dataset = "digits"\n', ""), "[data] needs 'dataset'"),
    ("authorized-missing", edit('authorized = [{ source = "zoo", model = "mlp-s0", epochs = 4 }]', 'evaluated = ["zoo:mlp-s0"]'),
     "[models] needs 'authorized'"),
    ("authorized-empty", edit('authorized = [{ source = "zoo", model = "mlp-s0", epochs = 4 }]', "authorized = []"),
     "[models] authorized is empty"),
    ("evaluated-empty", edit("[models]", "[models]\nevaluated = []"), "[models] evaluated is empty"),
    ("authorized-number", edit('authorized = [{ source = "zoo", model = "mlp-s0", epochs = 4 }]', "authorized = 3"),
     "[models] authorized = 3"),
    ("model-no-source", model('"mlp-s0"'), "'mlp-s0'"),
    ("check-default-string", edit("default_tolerance = 1.0", 'default_tolerance = "one"'), "default_tolerance = 'one'"),
    ("check-default-negative", edit("default_tolerance = 1.0", "default_tolerance = -1"), "default_tolerance = -1"),
    ("check-tolerance-string", edit("default_tolerance = 1.0", 'tolerance = { auth_gap = "x" }'), "'x'"),
    ("check-tolerance-number", edit("default_tolerance = 1.0", "tolerance = 3"), "tolerance = 3"),
    ("report-psnr-string", edit("[report]\npsnr = [20]", '[report]\npsnr = "x"'), "[report] psnr = 'x'"),
    ("report-release-number", edit("[report]\npsnr = [20]", "[report]\nrelease = [1]"), "release = [1]"),
    ("report-paper-models", edit("[report]\npsnr = [20]", "[report]\npaper_models = { a = 1 }"), "paper_models = {'a': 1}"),
    ("report-paper-psnr", edit("[report]\npsnr = [20]", '[report]\npaper_psnr = "20"'), "paper_psnr = '20'"),
    ("run-batch-zero", add("[run]\nbatch_size = 0"), "[run] batch_size = 0"),
    ("run-batch-string", add('[run]\nbatch_size = "big"'), "[run] batch_size = 'big'"),
    ("run-device", add('[run]\ndevice = "gpu"'), "[run] device = 'gpu'"),
    ("run-threads-float", add("[run]\nthreads = 1.5"), "[run] threads = 1.5"),
    ("executor-retries", add("[executor]\nmax_retries = -1"), "[executor] max_retries = -1"),
    ("executor-mem", add('[executor]\nmem_gb = "lots"'), "[executor] mem_gb = 'lots'"),
    ("executor-not-table", edit("[suite]", 'executor = "ray"\n[suite]'), "[executor] must be a table"),
    ("suite-name-number", edit('name = "bad-input"', "name = 5"), "[suite] name = 5"),
    ("suite-name-path", edit('name = "bad-input"', 'name = "../escaped"'), "'../escaped'"),
    ("description-number", edit("seed = 0", "seed = 0\ndescription = 1"), "[suite] description = 1"),
    ("suspects-type", add('[suspects]\npositives = ["finetune(all)"]\nnegatives = ["mlp"]\nnegative_epochs = "x"'),
     "[suspects] negative_epochs = 'x'"),
    ("glue-tasks-type", edit('dataset = "digits"\nsplit = "test"', 'dataset = "glue"\ntasks = "sst2"'), "tasks = 'sst2'"),
    # -- defense and attack parameters: the registered class's own declared parameters ------------------------
    ("ne-tau-string", entry('name = "ne-patch"\nparams = { tau = "abc" }\npsnr = [20]'), "tau = 'abc'"),
    ("ne-tau-sweep-string", entry('name = "ne-patch"\nsweep = { tau = ["abc"] }\npsnr = [20]'), "tau = 'abc'"),
    ("ne-unknown-param", entry('name = "ne-patch"\nparams = { tua = 1 }\npsnr = [20]'), "has no parameter 'tua'"),
    ("ne-rule", entry('name = "ne-patch"\nparams = { rule = "median" }\npsnr = [20]'), "'median'"),
    ("ne-layout-number", entry('name = "ne-patch"\nparams = { layout = 3 }\npsnr = [20]'), "layout = 3"),
    ("noise-code", entry('name = "noise"\nparams = { code = "pixel" }\npsnr = [20]'), "'pixel'"),
    ("corelocker-ratio-string", entry('name = "corelocker"\nparams = { ratio = "0.2" }'), "ratio = '0.2'"),
    ("corelocker-ratio-range", entry('name = "corelocker"\nparams = { ratio = 2 }'), "ratio = 2"),
    ("corelocker-criterion", entry('name = "corelocker"\nparams = { criterion = "l2" }'), "'l2'"),
    ("corelocker-sweep-string", entry('name = "corelocker"\nsweep = { ratio = ["x"] }'), "ratio = 'x'"),
    ("algospec-degree-string", entry('name = "algospec"\nparams = { degree = "8" }'), "degree = '8'"),
    ("glue-param-string", ("suite", BASE.replace('dataset = "digits"\nsplit = "test"', 'dataset = "glue"\ntasks = ["sst2"]')
                                         .replace(ENTRY, 'name = "ne-text"\nparams = { dims = "x" }\nrelease = ["embedding"]')),
     "defense 'ne-text' parameter dims = 'x'"),
    ("attack-param-string", entry(ENTRY + '\nattacks = [{ name = "jpeg", quality = "high" }]'), "quality = 'high'"),
    ("attack-unknown-param", entry(ENTRY + '\nattacks = [{ name = "jpeg", qualty = 75 }]'), "has no parameter 'qualty'"),
    ("attack-unknown", entry(ENTRY + '\nattacks = ["jpg"]'), "unknown attack 'jpg'"),
    ("attack-wrong-kind", entry(ENTRY + '\nattacks = ["finetune"]'), "'finetune'"),
    ("attack-not-an-attack", entry(ENTRY + '\nattacks = ["collections:OrderedDict"]'), "'collections:OrderedDict' is the class"),
    ("defense-unknown", entry('name = "nee"'), "unknown defense 'nee'"),
    ("defense-not-a-defense", entry('name = "collections:OrderedDict"'), "'collections:OrderedDict' is the class"),
    ("defense-a-function", entry('name = "os.path:join"'), "'os.path:join' is a function, not a defense"),
    ("defense-no-module", entry('name = "no_such_module_xyz:Thing"'), "no_such_module_xyz"),
    ("defense-no-class", entry('name = "bench.defenses:NoSuch"'), "has no 'NoSuch'"),
    ("defense-empty-class", entry('name = "json:"'), "'json:'"),
    ("release-unknown", entry('name = "noise"\npsnr = [20]\nrelease = ["png"]'), "unknown release 'png'"),
    ("entry-model-unknown", entry(ENTRY + '\nmodels = ["nope"]'), "model 'nope'"),
    # -- models and data ----------------------------------------------------------------------------------------
    ("factory-raises", model('{ source = "torch", factory = "models_example:broken", mean = [0.5], std = [0.25], '
                             'input_size = [1, 32, 32], name = "b" }'), "weights server unreachable"),
    ("factory-not-module", model('{ source = "torch", factory = "collections:OrderedDict", mean = [0.5], std = [0.25], '
                                 'input_size = [1, 32, 32], name = "b" }'), "not a torch.nn.Module"),
    ("factory-no-module", model('{ source = "torch", factory = "no_such_pkg_xyz:net", mean = [0.5], std = [0.25], '
                                'input_size = [1, 32, 32], name = "b" }'), "no_such_pkg_xyz"),
    ("zoo-unknown", model('"zoo:nope-s0"'), "unknown zoo model 'nope-s0'"),
    ("source-unknown", model('"tf:resnet"'), "unknown model source 'tf'"),
    ("checkpoint-missing", model('{ source = "torch", factory = "models_example:tiny_cnn", mean = [0.5], std = [0.25], '
                                 'input_size = [1, 32, 32], name = "c", checkpoint = "missing.pt" }'), "'missing.pt'"),
    ("model-channels", model('{ source = "torch", factory = "models_example:rgb_cnn", mean = [0.5], std = [0.25], '
                             'input_size = [3, 32, 32], name = "c" }'), "(3, 32, 32)"),
    ("dataset-unknown", edit('dataset = "digits"', 'dataset = "svhn"'), "unknown dataset 'svhn'"),
    ("npz-object-array", npz("objects"), "dtype object"),
    ("npz-lengths", npz("lengths"), "4 images but 3 labels"),
    ("npz-label-range", npz("label10"), "label 10 is outside [0, 10)"),
    ("npz-label-negative", npz("label_neg"), "label -1 is outside [0, 10)"),
    ("npz-pixels-high", npz("bright"), "2.5"),
    ("npz-pixels-low", npz("dark"), "-0.5"),
    ("npz-junk", npz("junk"), "cannot read it as an .npz"),
    ("npz-no-labels", npz("nolabels"), "needs arrays 'images' and 'labels'"),
    ("npz-missing", npz("absent"), "does not exist"),
    # -- command-line values -------------------------------------------------------------------------------------
    ("cli-psnr-no-cell", argv("run", "{suite}", "--psnr", "33"), "--psnr 33 selects no cell of suite 'bad-input'; valid choices: 20"),
    ("cli-release-no-cell", argv("run", "{suite}", "--release", "clip"), "--release clip selects no cell"),
    ("cli-release-unknown", argv("run", "{suite}", "--release", "png"), "--release png selects no cell"),
    ("cli-model-unknown", argv("run", "{suite}", "--model", "resnet"), "model 'resnet' is not in suite"),
    ("cli-defense-unknown", argv("run", "{suite}", "--defense", "ne-patch"), "defense 'ne-patch' is not in suite"),
    ("cli-psnr-abc", argv("run", "{suite}", "--psnr", "abc"), "'abc'"),
    ("cli-subset-negative", argv("run", "{suite}", "--subset", "-1"), "--subset must be >= 0"),
    ("cli-subset-ten", argv("run", "{suite}", "--subset", "ten"), "'ten'"),
    ("cli-batch-zero", argv("run", "{suite}", "--batch-size", "0"), "batch size must be >= 1, got 0"),
    ("cli-threads-zero", argv("run", "{suite}", "--threads", "0"), "threads must be >= 1, got 0"),
    ("cli-device", argv("run", "{suite}", "--device", "gpu"), "'gpu'"),
    ("cli-executor", argv("run", "{suite}", "--executor", "slurm"), "'slurm'"),
    ("cli-out-file", argv("run", "{suite}", "--out", "{file}"), "is a file, not a folder"),
    ("cli-out-under-file", argv("run", "{suite}", "--out", "{file}/run"), "which is a file, not a folder"),
    ("cli-reports-under-file", argv("run", "{suite}", "--reports", "{file}/rep"), "--reports"),
    ("cli-cache-under-file", argv("run", "{suite}", "--cache-dir", "{file}/cache"), "--cache-dir"),
    ("cli-data-root-digits", argv("run", "{suite}", "--data-root", "{tmp}"), "with --data-root: unknown key 'root' in [data]"),
    ("cli-no-suite", argv("run", "no-such-suite"), "unknown suite 'no-such-suite'"),
    ("cli-suite-binary", argv("run", "{binary}.toml"), "is not a text (UTF-8) TOML file"),
    ("cli-malformed-toml", ("suite", "[suite\nname = 1"), "malformed TOML"),
    # -- report and check on malformed or foreign files --------------------------------------------------------
    ("report-list-lines", argv("report", "{lists}"), "is not a result row (a JSON object, got a list)"),
    ("report-number-lines", argv("report", "{numbers}"), "got an int"),
    ("report-missing-keys", argv("report", "{foreign}"), "has no 'defense' key"),
    ("report-metrics-not-table", argv("report", "{badmetrics}"), "its 'metrics' is a str"),
    ("report-binary", argv("report", "{binary}.jsonl"), "is not a text file of JSON result rows"),
    ("report-empty", argv("report", "{empty}"), "holds no result rows"),
    ("report-damaged", argv("report", "{damaged}"), ":1 is not a JSON result row"),
    ("report-sparse-rows", argv("report", "{sparse}", "--out", "{tmp}/rep3"), "a row has no"),
    # a suite name that would escape a folder names none: reports go beside the results (<run>/reports)
    ("report-suite-escapes", argv("report", "{escaping}"), "a row has no 'release' field"),
    ("check-sparse-rows", argv("check", "{sparse}", "--against", "{out}"), "a row has no"),
    ("report-absent", argv("report", "{tmp}/nowhere/results.jsonl"), "does not exist"),
    ("report-suite-bad", argv("report", "{out}", "--out", "{tmp}/rep2", "--suite", "no-such-suite"),
     "unknown suite 'no-such-suite'"),
    ("report-out-under-file", argv("report", "{out}", "--out", "{file}/rep"), "--out"),
    ("check-fresh-lists", argv("check", "{lists}", "--against", "{out}"), "got a list"),
    ("check-fresh-foreign", argv("check", "{foreign}", "--against", "{out}"), "has no 'defense' key"),
    ("check-reference-list", argv("check", "{out}", "--against", "{jsonlist}"), "is not an authbench reference"),
    ("check-reference-rows", argv("check", "{out}", "--against", "{badboard}"), "rows[0] is not a leaderboard row"),
    ("check-reference-binary", argv("check", "{out}", "--against", "{binary}.json"), "is not readable JSON"),
    ("check-reference-empty", argv("check", "{out}", "--against", "{tmp}/empty.json"), "is not readable JSON"),
    ("check-tolerance-syntax", argv("check", "{out}", "--against", "{out}", "--tolerance", "top1"), "'top1'"),
    ("check-tolerance-metric", argv("check", "{out}", "--against", "{out}", "--tolerance", "auth_gapp=1"), "auth_gapp"),
    ("check-empty-fresh", argv("check", "{empty}", "--against", "{out}"), "no result rows"),
    # -- issue 25: code from data, writes outside the folder given, unlike inputs, ranges, tracebacks --------------
    # data convert: pickles are read by a restricted unpickler; malformed batches are one line
    ("convert-cifar-payload", argv("data", "convert", "{cifar_evil}", "--out", "{tmp}/evil.npz"),
     "refused to read this CIFAR pickle batch"),
    ("convert-cifar-meta-payload", argv("data", "convert", "{cifar_evil_meta}", "--out", "{tmp}/evil-meta.npz"),
     "refused to read this CIFAR meta file"),
    ("convert-cifar-shape", argv("data", "convert", "{cifar_shape}", "--out", "{tmp}/c2.npz"),
     "'data' must be a uint8 array (N, 3072)"),
    ("convert-cifar-labels", argv("data", "convert", "{cifar_labels}", "--out", "{tmp}/c4.npz"),
     "3 images but 2 labels"),
    ("convert-cifar-meta-type", argv("data", "convert", "{cifar_badmeta}", "--out", "{tmp}/c5.npz"),
     "a CIFAR meta file is a dict whose 'label_names'"),
    ("convert-nan-images", argv("data", "convert", "{nanimg}", "--out", "{tmp}/nan.npz"), "NaN or infinite values"),
    ("convert-out-under-file", argv("data", "convert", "{label10}", "--out", "{file}/x.npz"), "which is a file"),
    ("convert-out-folder", argv("data", "convert", "{label10}", "--out", "{folder_npz}"), "is a folder"),
    ("convert-imagefolder-under-file", argv("data", "convert", "{cifar_ok}", "--out", "{file}/if", "--to",
                                            "imagefolder"), "which is a file"),
    # writes whose folder comes from data (a suite field in rows) stay under the folder given
    ("rank-suite-escapes-out", argv("rank", "{escaping_run}", "--against", "{escaping_run}", "--out", "{tmp}/ranked"),
     "cannot name a file or folder"),
    ("rank-suite-escapes-default", argv("rank", "{escaping_run}", "--against", "{escaping_run}"), "cannot name a file or folder"),
    ("rank-suite-escapes-submit", argv("rank", "{escaping_run}", "--against", "{escaping_run}", "--out", "{tmp}/r0",
                                       "--submit", "{tmp}/sub"), "cannot name a file or folder"),
    ("report-suite-escapes-out", argv("report", "{escaping_run}", "--out", "{tmp}/rep-escape"),
     "cannot name a file or folder"),
    ("freeze-suite-escapes-entries", argv("leaderboard", "freeze", "{escaping_run}", "--out", "{tmp}/ref-e.json",
                                          "--entries", "{tmp}/entries"), "cannot name a file or folder"),
    ("rank-mixed-suites", argv("rank", "{mixed_rows}", "--against", "{mixed_rows}", "--out", "{tmp}/r-mixed"),
     "holds rows of 2 suites"),
    # cache clear deletes only a marked cache
    ("cache-clear-unmarked", argv("cache", "clear", "--cache-dir", "{notcache}"), "carries no authbench cache marker"),
    ("cache-clear-namespace-unmarked", argv("cache", "clear", "--cache-dir", "{notcache}", "--namespace", "forward"),
     "carries no authbench cache marker"),
    # rank and check compare identity, not names
    ("rank-other-data", argv("rank", "{otherdata}", "--against", "{out}", "--out", "{tmp}/r1"), "data (identity"),
    ("rank-other-standard", argv("rank", "{otherstandard}", "--against", "{out}", "--out", "{tmp}/r3"),
     "standard attacks of the input board"),
    ("rank-suite-unknown", argv("rank", "{out}", "--against", "{out}", "--out", "{tmp}/r4", "--suite", "nosuch-suite"),
     "unknown suite 'nosuch-suite'"),
    ("rank-no-boards", argv("rank", "{out}", "--against", "{noboards}", "--out", "{tmp}/r5"),
     "authbench run <suite> --out runs/<suite>-reference"),
    ("check-other-suite", argv("check", "{othersuite}", "--against", "{out}", "--allow-subset"), "suite 'other-suite' vs the reference's"),
    ("check-other-data", argv("check", "{otherdata}", "--against", "{out}"), "data (identity"),
    ("check-other-weights", argv("check", "{otherweights}", "--against", "{out}"), "model weights (mlp-s0"),
    ("check-nothing-compared", argv("check", "{cleanonly}", "--against", "{out}", "--allow-subset"),
     "nothing to compare"),
    ("run-out-other-suite", argv("run", "{suite}", "--out", "{othersuite_dir}"), "holds rows of suite 'other-suite'"),
    ("plan-out-other-suite", argv("run", "{suite}", "--out", "{othersuite_dir}", "--plan"),
     "holds rows of suite 'other-suite'"),
    # numbers: finite, non-negative tolerances; sizes the data can give; models that fit the data
    ("check-default-tolerance-nan", argv("check", "{out}", "--against", "{out}", "--default-tolerance", "nan"),
     "--default-tolerance = nan is not a tolerance"),
    ("check-default-tolerance-negative", argv("check", "{out}", "--against", "{out}", "--default-tolerance", "-1"),
     "--default-tolerance = -1.0 is not a tolerance"),
    ("check-default-tolerance-inf", argv("check", "{out}", "--against", "{out}", "--default-tolerance", "inf"),
     "--default-tolerance = inf"),
    ("check-tolerance-nan", argv("check", "{out}", "--against", "{out}", "--tolerance", "auth_gap=nan"),
     "--tolerance auth_gap = nan"),
    ("check-tolerance-negative", argv("check", "{out}", "--against", "{out}", "--tolerance", "auth_gap=-2"),
     "--tolerance auth_gap = -2.0"),
    ("zoo-retrain-tolerance-negative", argv("zoo", "retrain", "--model", "mlp-s0", "--tolerance", "-1",
                                            "--cache-dir", "{tmp}/zc"), "--tolerance -1.0 is not a tolerance"),
    ("zoo-retrain-tolerance-nan", argv("zoo", "retrain", "--model", "mlp-s0", "--tolerance", "nan",
                                       "--cache-dir", "{tmp}/zc"), "--tolerance nan is not a tolerance"),
    ("zoo-retrain-cache-under-file", argv("zoo", "retrain", "--model", "mlp-s0", "--cache-dir", "{file}/zoo"),
     "which is a file"),
    ("data-subset-too-large", edit("subset = 24", "subset = 100000"), "[data] subset = 100000 is larger than"),
    ("model-fewer-outputs", model('{ source = "torch", factory = "models_example:tiny_cnn", kwargs = { classes = 5 }, '
                                  'mean = [0.5], std = [0.25], input_size = [1, 32, 32], name = "five", init_seed = 0 }'),
     "five: has 5 outputs but the data's labels go up to 9"),
    # executor requests that cannot be met fail fast
    ("ray-gpus-no-gpu", argv("run", "{suite}", "--out", "{tmp}/ray-run", "--executor", "ray", "--gpus-per-job", "1"),
     "--gpus-per-job 1 cannot be met"),
    ("ray-address-unreachable", argv("run", "{suite}", "--out", "{tmp}/ray-run", "--executor", "ray", "--address", "127.0.0.1:1"),
     "cannot reach the Ray cluster at '127.0.0.1:1' within 5s"),
    ("submitit-gpus-no-gpu", argv("run", "{suite}", "--out", "{tmp}/submitit-run", "--executor", "submitit",
                                     "--gpus-per-job", "1"),
     "--gpus-per-job 1 cannot be met: submitit runs locally"),
    # outputs under a regular file, or onto a folder: one line before any work
    ("check-junit-under-file", argv("check", "{out}", "--against", "{out}", "--junit", "{file}/j.xml"),
     "--junit"),
    ("check-junit-folder", argv("check", "{out}", "--against", "{out}", "--junit", "{tmp}"), "is a folder"),
    ("rank-out-under-file", argv("rank", "{out}", "--against", "{out}", "--out", "{file}/ranked"), "which is a file"),
    ("rank-out-file", argv("rank", "{out}", "--against", "{out}", "--out", "{file}"), "is a file, not a folder"),
    ("rank-submit-under-file", argv("rank", "{out}", "--against", "{out}", "--out", "{tmp}/r6", "--submit",
                                    "{file}/entries"), "--submit"),
    ("rank-submit-file", argv("rank", "{out}", "--against", "{out}", "--out", "{tmp}/r7", "--submit", "{file}"),
     "--submit"),
    ("freeze-out-under-file", argv("leaderboard", "freeze", "{out}", "--out", "{file}/ref.json"), "which is a file"),
    ("freeze-out-folder", argv("leaderboard", "freeze", "{out}", "--out", "{tmp}"), "is a folder"),
    ("imagefolder-empty-classes", ("suite", "@imagefolder_suite@"), "the 41 class folders under"),
    ("checkpoint-json", model('{ source = "torch", factory = "models_example:tiny_cnn", mean = [0.5], std = [0.25], '
                              'input_size = [1, 32, 32], name = "c", checkpoint = "@convnetjs@" }'),
     'loader = "module:function"'),
    ("checkpoint-pickle-payload", model('{ source = "torch", factory = "models_example:tiny_cnn", mean = [0.5], '
                                        'std = [0.25], input_size = [1, 32, 32], name = "c", checkpoint = "@evil_pt@" }'),
     'loader = "module:function"'),
    ("plan-bad-model", flags(model('{ source = "torch", factory = "models_example:broken", mean = [0.5], std = [0.25], '
                                   'input_size = [1, 32, 32], name = "b" }'), "--plan"), "weights server unreachable"),
    ("plan-wrong-channels", flags(model('{ source = "torch", factory = "models_example:rgb_cnn", mean = [0.5], '
                                        'std = [0.25], input_size = [3, 32, 32], name = "c" }'), "--plan"), "(3, 32, 32)"),
]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One small finished run: its results file, and the files the cases name."""
    tmp = tmp_path_factory.mktemp("bad-input")
    suite = tmp / "suite.toml"
    suite.write_text(BASE)
    out, cache = tmp / "run", tmp / "cache"
    assert main(["run", str(suite), "--out", str(out), "--reports", str(tmp / "rep"), "--cache-dir", str(cache),
                 "--no-progress", "--threads", "1"]) == 0
    files = {"suite": str(suite), "out": str(out), "tmp": str(tmp), "file": str(tmp / "a-file")}
    (tmp / "a-file").write_text("not a folder\n")
    img = np.zeros((4, 32, 32, 3), dtype=np.uint8)
    objects = np.empty(4, dtype=object)
    objects[:] = [[1], [2], [3], [4]]
    arrays = {"objects": dict(images=img, labels=objects), "lengths": dict(images=img, labels=np.arange(3)),
              "label10": dict(images=img, labels=np.array([0, 10, 1, 2])),
              "label_neg": dict(images=img, labels=np.array([0, 1, -1, 2])),
              "bright": dict(images=np.full((4, 32, 32, 3), 2.5, np.float32), labels=np.arange(4)),
              "dark": dict(images=np.full((4, 3, 32, 32), -0.5, np.float32), labels=np.arange(4)),
              "nolabels": dict(images=img)}
    for name, content in arrays.items():
        np.savez(tmp / f"{name}.npz", **content)
        files[name] = str(tmp / f"{name}.npz")
    (tmp / "junk.npz").write_bytes(b"junk")
    files.update(junk=str(tmp / "junk.npz"), absent=str(tmp / "absent.npz"))
    texts = {"lists": "[1, 2]\n[3, 4]\n", "numbers": "1\n2\n", "foreign": '{"a": 1}\n{"b": 2}\n',
             "badmetrics": json.dumps({"cell": "c", "suite": "s", "defense": "d", "authorized": "", "evaluated": "e",
                                       "metrics": "top1=9"}) + "\n",
             "empty": "", "damaged": "{not json\n{\"a\": 1}\n",
             "sparse": json.dumps({"defense": "d", "authorized": "", "evaluated": "e", "metrics": {}}) + "\n",
             "escaping": json.dumps({"suite": "../../x", "defense": "d", "authorized": "", "evaluated": "e",
                                     "metrics": {}}) + "\n"}
    for name, text in texts.items():
        (tmp / f"{name}.jsonl").write_text(text)
        files[name] = str(tmp / f"{name}.jsonl")
    (tmp / "empty.json").write_text("")
    (tmp / "jsonlist.json").write_text("[1, 2, 3]")
    (tmp / "badboard.json").write_text(json.dumps({"kind": "authbench-leaderboard", "rows": [1, 2]}))
    files.update(jsonlist=str(tmp / "jsonlist.json"), badboard=str(tmp / "badboard.json"))
    for ext in (".jsonl", ".json", ".toml"):
        (tmp / f"binary{ext}").write_bytes(bytes(range(256)) * 4)
    files["binary"] = str(tmp / "binary")
    results = out / "results.jsonl"
    files.update(issue25_files(tmp, results))
    return {"files": files, "results": results, "bytes": results.read_bytes(), "cache": str(cache), "tmp": tmp}


class Payload:
    """A pickle that, when unpickled by pickle.load, creates the file MARKER (it names builtins.open)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def two_rgb_models() -> str:
    spec = RGB_MODEL.split("[", 1)[1].rsplit("]", 1)[0]
    return ", ".join(spec.replace('name = "rgb"', f'name = "rgb{i}"') for i in (1, 2))


def cifar_folder(folder: Path, batch=None, meta=None) -> str:
    """A CIFAR-10 folder holding test_batch (a valid 3-image batch unless `batch` says) and batches.meta."""
    import pickle

    folder.mkdir(parents=True)
    valid = {"data": np.zeros((3, 3072), np.uint8), "labels": [0, 1, 2], "batch_label": "test", "filenames": ["a"] * 3}
    raw = batch if isinstance(batch, bytes) else pickle.dumps(valid if batch is None else batch, protocol=2)
    (folder / "test_batch").write_bytes(raw)
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": ["a", "b", "c"]} if meta is None else meta))
    return str(folder)


def rows_copy(results: Path, path: Path, change) -> str:
    """The finished run's rows, each passed through `change(row)`, written to `path` (a .jsonl)."""
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    out = [r for r in (change(json.loads(json.dumps(r))) for r in rows) if r is not None]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in out))
    return str(path)


def issue25_files(tmp: Path, results: Path) -> dict:
    marker = tmp / "PAYLOAD-RAN"
    files = {"marker": str(marker)}
    files["cifar_evil"] = cifar_folder(tmp / "cifar-evil", batch=Payload(marker))
    files["cifar_evil_meta"] = cifar_folder(tmp / "cifar-evil-meta", meta=Payload(marker))
    files["cifar_list"] = cifar_folder(tmp / "cifar-list", batch=[1, 2, 3])
    files["cifar_shape"] = cifar_folder(tmp / "cifar-shape", batch={"data": np.zeros((3, 100), np.uint8), "labels": [0] * 3})
    files["cifar_junk"] = cifar_folder(tmp / "cifar-junk", batch=b"junk, not a pickle")
    files["cifar_labels"] = cifar_folder(tmp / "cifar-labels", batch={"data": np.zeros((3, 3072), np.uint8), "labels": [0, 1]})
    files["cifar_badmeta"] = cifar_folder(tmp / "cifar-badmeta", meta={"label_names": 5})
    files["cifar_ok"] = cifar_folder(tmp / "cifar-ok")
    nan = np.full((2, 8, 8, 3), 0.5, np.float32)
    nan[1, 0, 0, 0] = np.nan
    np.savez(tmp / "nanimg.npz", images=nan, labels=np.arange(2))
    files["nanimg"] = str(tmp / "nanimg.npz")
    (tmp / "folder.npz").mkdir()
    files["folder_npz"] = str(tmp / "folder.npz")

    def suite_is(name):
        def change(r):
            r["suite"] = name
            return r
        return change

    def provenance(**values):
        def change(r):
            r["provenance"].update(values)
            return r
        return change

    def weights(r):
        for key, label in (("authorized_digest", "authorized"), ("model_digest", "evaluated")):
            if r.get(label) == "mlp-s0" and r["provenance"].get(key):
                r["provenance"][key] = "0" * 64
        return r

    files["escaping_run"] = rows_copy(results, tmp / "escaping-run.jsonl", suite_is("../../../x-escape"))
    files["othersuite"] = rows_copy(results, tmp / "other-suite.jsonl", suite_is("other-suite"))
    files["othersuite_dir"] = str(Path(rows_copy(results, tmp / "other-run" / "results.jsonl", suite_is("other-suite"))).parent)
    def other_cells(r):
        r.update(suite="other-suite", cell=r["cell"][:-4] + "0ther")
        return r

    rows_copy(results, tmp / "other-cells.jsonl", other_cells)
    (tmp / "mixed.jsonl").write_text(results.read_text() + (tmp / "other-cells.jsonl").read_text())
    files["mixed_rows"] = str(tmp / "mixed.jsonl")
    files["otherdata"] = rows_copy(results, tmp / "other-data.jsonl", provenance(data_identity="f" * 24))
    files["otherweights"] = rows_copy(results, tmp / "other-weights.jsonl", weights)
    std_suite = tmp / "std" / "suite.toml"
    std_suite.parent.mkdir()
    std_suite.write_text(BASE + '\n[standard_attacks]\ninput = ["jpeg"]\n')
    files["otherstandard"] = rows_copy(results, tmp / "other-standard.jsonl", provenance(suite_path=str(std_suite)))
    files["cleanonly"] = rows_copy(results, tmp / "clean-only.jsonl", lambda r: r if r["defense"] == "none" else None)
    (tmp / "noboards.json").write_text(json.dumps({"kind": "authbench-leaderboard", "version": 1, "rows": []}))
    files["noboards"] = str(tmp / "noboards.json")
    (tmp / "not-a-cache").mkdir()
    (tmp / "not-a-cache" / "thesis.tex").write_text("years of work\n")
    (tmp / "not-a-cache" / "forward").mkdir()
    files["notcache"] = str(tmp / "not-a-cache")
    # an ImageFolder of 41 empty class folders: one bounded line, said once (not once per model)
    images = tmp / "imagefolder"
    for i in range(41):
        (images / f"class-with-a-long-name-{i:04d}").mkdir(parents=True)
    files["imagefolder_suite"] = (BASE.replace('[data]\ndataset = "digits"\nsplit = "test"\nsubset = 24\n',
                                               f'[data]\ndataset = "imagenet"\nsplit = "validation"\nroot = "{images}"\nresize = 32\n')
                                  .replace('authorized = [{ source = "zoo", model = "mlp-s0", epochs = 4 }]',
                                           f"authorized = [{two_rgb_models()}]"))
    (tmp / "convnetjs.json").write_text(json.dumps({"layers": [{"layer_type": "input", "out_sx": 32}]}))
    files["convnetjs"] = str(tmp / "convnetjs.json")
    import pickle

    (tmp / "evil.pt").write_bytes(pickle.dumps(Payload(marker)))
    files["evil_pt"] = str(tmp / "evil.pt")
    return files


def _argv(case, finished) -> list[str]:
    kind, spec = case
    files = finished["files"]
    if kind in ("suite", "suite+"):
        spec, extra = (spec, []) if kind == "suite" else spec
        path = finished["tmp"] / "case.toml"
        for key, value in files.items():
            spec = spec.replace(f"@{key}@", value)
        path.write_text(spec)
        args = ["run", str(path), *extra]
    else:
        args = [a.format(**files) for a in spec]
    if args[0] == "run":
        for flag, value in (("--out", files["out"]), ("--cache-dir", finished["cache"]),
                            ("--reports", str(finished["tmp"] / "rep")), ("--threads", "1")):
            if flag not in args:
                args += [flag, value]
        args += ["--no-progress"]
    return args


@pytest.mark.parametrize("name, case, needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_loses_nothing(capsys, finished, name, case, needle):
    code = main(_argv(case, finished))
    out, err = capsys.readouterr()
    assert code == 2, f"exit {code}; stdout: {out[-300:]!r}; stderr: {err!r}"
    assert err.startswith("authbench: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert needle in err, err
    assert len(err) < 1300, f"an error line of {len(err)} characters"  # bounded: a few named, the rest counted
    assert finished["results"].read_bytes() == finished["bytes"]  # the finished run is untouched
    assert not Path(finished["files"]["marker"]).exists()  # no pickle payload ran
    tmp = finished["tmp"]  # the escaping suite name is ../../../x-escape: nothing lands one to three levels up
    assert not any((p / "x-escape").exists() or list(p.glob("x-escape*")) for p in (tmp, tmp.parent, tmp.parent.parent))
    assert not (ROOT / "reports" / "x-escape").exists() and not (ROOT.parent / "x-escape").exists()


def test_the_table_covers_enough_cases():
    assert len(CASES) >= 207 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("args, needle", [
    (["run", "{suite}", "--psnr", "33"], "--psnr 33 selects no cell"),
    (["run", "{case}"], "unknown key 'evalutaed' in [models]"),
    (["report", "{lists}"], "got a list"),
])
def test_bad_input_end_to_end_in_a_fresh_process(finished, args, needle):
    files = dict(finished["files"])
    case = finished["tmp"] / "e2e.toml"
    case.write_text(BASE.replace("[models]", '[models]\nevalutaed = ["zoo:mlp-s1"]'))
    files["case"] = str(case)
    argv = [a.format(**files) for a in args]
    if argv[0] == "run":
        argv += ["--out", files["out"], "--cache-dir", finished["cache"], "--no-progress"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    proc = subprocess.run([sys.executable, "-m", "bench", *argv], env=env, capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert needle in proc.stderr
    assert finished["results"].read_bytes() == finished["bytes"]


def test_the_schema_is_a_valid_json_schema_and_every_key_has_a_row_in_the_docs():
    import jsonschema

    from bench.suite_schema import SECTIONS, schema

    jsonschema.Draft202012Validator.check_schema(schema())
    docs = (ROOT / "docs" / "suites.md").read_text()
    missing = [(s, k) for s, keys in SECTIONS.items() for k in keys
               if f"| `{'[[defenses]]' if s == 'defenses' else f'[{s}]'}` | `{k}`" not in docs]
    assert not missing, f"keys without a row in docs/suites.md's key table: {missing}"


def test_a_parameter_a_defense_declares_is_validated_without_editing_the_schema():
    from bench.defenses.base import InputDefense
    from bench.core.errors import UserError

    class Declared(InputDefense):
        name = "declared"
        description = "a defense that declares a new parameter"
        defaults = {"strength": 0.5, "mode": "fast", "extra": None, "code": "instance"}

    assert Declared(strength=2, mode="slow", extra=[1]).params["strength"] == 2
    for params, needle in (({"strength": "high"}, "strength = 'high'"), ({"mode": 3}, "mode = 3"),
                           ({"strength": True}, "strength = True"), ({"strenght": 1.0}, "no parameter 'strenght'")):
        with pytest.raises(UserError, match=needle.replace("(", r"\(")):
            Declared(**params)


# -- issue 25: no reader runs a pickle payload --------------------------------------------------------------

def _torchvision_cifar(tmp_path, marker, cls_name):
    from bench.data.vision import torchvision_set

    folder = tmp_path / ("cifar-10-batches-py" if cls_name == "CIFAR10" else "cifar-100-python")
    import pickle

    folder.mkdir()
    for name in (["test_batch"] if cls_name == "CIFAR10" else ["test"]):
        (folder / name).write_bytes(pickle.dumps(Payload(marker)))
    torchvision_set(cls_name, str(tmp_path), False)


def _convert_batch(tmp_path, marker):
    from bench.data.convert import convert

    convert(Path(cifar_folder(tmp_path / "c", batch=Payload(marker))), tmp_path / "o.npz")


def _convert_meta(tmp_path, marker):
    from bench.data.convert import convert

    convert(Path(cifar_folder(tmp_path / "c", meta=Payload(marker))), tmp_path / "o.npz")


def _checkpoint(tmp_path, marker):
    import pickle

    from bench.models.sources import _read_checkpoint

    (tmp_path / "w.pt").write_bytes(pickle.dumps({"w": Payload(marker)}))
    _read_checkpoint(tmp_path / "w.pt", "m", None)


def _cache_entry(tmp_path, marker):
    """A cache entry whose payload is an .npz holding a pickled object array, checksums recomputed."""
    import hashlib
    import io
    import pickle

    from bench.core.cache import KEY_FIELD, MAGIC_V2, ArrayCache

    cache = ArrayCache(tmp_path, "forward")
    key = cache.key("m", {})
    obj = np.empty(1, dtype=object)
    obj[0] = Payload(marker)
    buf = io.BytesIO()
    np.savez(buf, logits=obj, **{KEY_FIELD: np.array(key)})
    payload = buf.getvalue()
    cache.path_of(key).parent.mkdir(parents=True)
    cache.path_of(key).write_bytes(MAGIC_V2 + hashlib.sha256(payload).digest() + b"\0" * 32 + payload)
    assert cache.get(key) is None and cache.stats.corrupt == 1 and pickle  # refused, removed


READERS = {"convert-cifar-batch": _convert_batch, "convert-cifar-meta": _convert_meta,
           "dataset-cifar10-root": lambda t, m: _torchvision_cifar(t, m, "CIFAR10"),
           "dataset-cifar100-root": lambda t, m: _torchvision_cifar(t, m, "CIFAR100"),
           "checkpoint-torch-load": _checkpoint, "cache-entry": _cache_entry}


@pytest.mark.parametrize("reader", sorted(READERS))
def test_no_reader_runs_a_crafted_pickle(tmp_path, reader):
    """Every reader of a pickled format refuses a pickle naming anything but plain data: the payload (which
    would create a marker file) never runs."""
    from bench.core.errors import UserError

    marker = tmp_path / "PAYLOAD-RAN"
    try:
        READERS[reader](tmp_path, marker)
    except UserError as exc:
        assert "\n" not in str(exc)
    assert not marker.exists(), f"{reader} ran the pickle's payload"


def test_the_restricted_unpickler_reads_real_cifar_batches_as_torchvision_wrote_them(tmp_path):
    """Protocol 2 (Python 2's CIFAR files, bytes via _codecs) and today's protocol both read back exactly."""
    import pickle

    from bench.safe_pickle import load_plain

    data = np.random.default_rng(0).integers(0, 256, (4, 3072), dtype=np.uint8)
    for protocol in (2, pickle.DEFAULT_PROTOCOL, pickle.HIGHEST_PROTOCOL):
        (tmp_path / "b").write_bytes(pickle.dumps({"data": data, "labels": [1, 2, 3, 4], "batch_label": b"x"},
                                                  protocol=protocol))
        batch = load_plain(tmp_path / "b")
        assert np.array_equal(batch["data"], data) and batch["labels"] == [1, 2, 3, 4]


# -- issue 25: no write escapes the folder given -----------------------------------------------------------

def test_convert_to_imagefolder_keeps_class_names_from_data_inside_out(tmp_path):
    from PIL import Image

    from bench.data.convert import convert

    images = tmp_path / "images"
    images.mkdir()
    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), i * 40, np.uint8)).save(images / f"{i}.png")
    (tmp_path / "labels.csv").write_text("0.png,../../escaped-csv\n1.png,/abs/escaped\n2.png,cat\n")
    out = tmp_path / "deep" / "out"
    convert(images, out, labels=tmp_path / "labels.csv", to="imagefolder")
    written = [p for p in tmp_path.rglob("*.png") if images not in p.parents]
    assert len(written) == 3 and all(out in p.parents for p in written)
    assert not list(tmp_path.rglob("escaped*")) or all(out in p.parents for p in tmp_path.rglob("escaped*"))
    cifar = Path(cifar_folder(tmp_path / "cifar", meta={"label_names": ["../../../escaped-meta", "..", "b/c"]}))
    out2 = tmp_path / "out2"
    convert(cifar, out2, to="imagefolder")
    assert sorted(p.name for p in out2.iterdir()) == ["b-c", "class-0001", "escaped-meta"]
    assert not (tmp_path.parent / "escaped-meta").exists()


def test_site_and_board_writers_refuse_names_that_leave_their_folder(finished, tmp_path):
    from bench.core.errors import UserError
    from bench.reports.boards import build_boards, write_boards
    from bench.reports.entries import write_entries
    from bench.reports.site import SitePage, SiteTable, write_site
    from bench.core.results import read_rows

    with pytest.raises(UserError, match="slug"):
        write_site(tmp_path / "site", title="t", pages=[SitePage(title="x", slug="../../escaped")])
    import pandas as pd

    table = SiteTable.from_frame(pd.DataFrame({"a": [1]}), title="t", slug="ok")
    object.__setattr__(table, "slug", "../../escaped")
    with pytest.raises(UserError, match="cannot name a file or folder"):
        write_site(tmp_path / "site2", title="t", pages=[SitePage(title="x", slug="page", tables=(table,))])
    boards = build_boards(read_rows(Path(finished["files"]["escaping_run"])), {})
    assert boards and boards[0].key.suite == "../../../x-escape"
    with pytest.raises(UserError, match="cannot name a file or folder"):
        write_boards(boards, tmp_path / "boards", {})
    with pytest.raises(UserError, match="cannot name a file or folder"):
        write_entries(boards, tmp_path / "a" / "b" / "entries", only_new=False)
    assert not list(tmp_path.rglob("x-escape*")) and not list(tmp_path.parent.glob("x-escape*"))


def test_under_refuses_a_symlink_that_leaves_the_root(tmp_path):
    from bench.core.errors import UserError
    from bench.paths import under

    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path)
    assert under(tmp_path / "root", "plain-name.json") == tmp_path / "root" / "plain-name.json"
    for parts in (("..",), ("a/b",), ("link", "x"), (".hidden",), ("",)):
        with pytest.raises(UserError):
            under(tmp_path / "root", *parts)


# -- issue 25: cache clear, corrupt and swapped entries ------------------------------------------------------

def test_cache_clear_deletes_only_a_marked_cache(tmp_path):
    from bench.core.cache import MARKER, ArrayCache, cache_clear

    other = tmp_path / "thesis"
    other.mkdir()
    (other / "chapter1.tex").write_text("work")
    assert main(["cache", "clear", "--cache-dir", str(other)]) == 2
    assert (other / "chapter1.tex").read_text() == "work"
    cache = ArrayCache(tmp_path / "cache", "forward")
    cache.put(cache.key("m", {}), {"x": np.zeros(2)})
    assert (tmp_path / "cache" / MARKER).is_file()  # written when the cache root is created
    cache_clear(tmp_path / "cache", "forward")
    assert not (tmp_path / "cache" / "forward").exists() and (tmp_path / "cache" / MARKER).is_file()
    assert main(["cache", "clear", "--cache-dir", str(tmp_path / "cache")]) == 0
    assert not (tmp_path / "cache").exists()


def test_a_cache_entry_that_is_not_an_array_file_is_removed_and_recomputed(tmp_path):
    """Regression (issue 25): a valid checksum over bytes that are not an .npz crashed every run."""
    import hashlib

    from bench.core.cache import MAGIC_V2, ArrayCache, binding

    cache = ArrayCache(tmp_path, "forward")
    key = cache.key("m", {})
    junk = b"these bytes are not an npz file"
    path = cache.path_of(key)
    path.parent.mkdir(parents=True)
    path.write_bytes(MAGIC_V2 + hashlib.sha256(junk).digest() + binding(key, {}) + junk)
    assert cache.get(key) is None and cache.stats.corrupt == 1 and not path.exists()
    cache.put(key, {"logits": np.ones(3)})
    assert np.array_equal(cache.get(key)["logits"], np.ones(3))


def test_another_entrys_arrays_with_a_recomputed_checksum_are_not_served(tmp_path):
    """Regression (issue 25): an entry holding another entry's arrays, its payload checksum recomputed, was
    served (wrong cells). The binding over the key and the array digests catches it."""
    import hashlib
    import io

    from bench.core.cache import KEY_FIELD, MAGIC_V2, ArrayCache, binding

    cache = ArrayCache(tmp_path, "forward")
    a = cache.key("model-a", {})
    buf = io.BytesIO()
    np.savez(buf, logits=np.ones(3), **{KEY_FIELD: np.array(a)})  # another entry's arrays under a's key
    payload = buf.getvalue()
    a_binding = binding(a, {"logits": np.zeros(3), KEY_FIELD: np.array(a)})  # a's own arrays' binding
    cache.path_of(a).parent.mkdir(parents=True)
    cache.path_of(a).write_bytes(MAGIC_V2 + hashlib.sha256(payload).digest() + a_binding + payload)
    assert cache.get(a) is None and cache.stats.corrupt == 1


def test_an_entry_of_the_previous_format_is_recomputed_not_a_crash(tmp_path):
    import hashlib
    import io

    from bench.core.cache import KEY_FIELD, MAGIC_V1, ArrayCache

    cache = ArrayCache(tmp_path, "forward")
    key = cache.key("m", {})
    buf = io.BytesIO()
    np.savez(buf, logits=np.ones(3), **{KEY_FIELD: np.array(key)})
    cache.path_of(key).parent.mkdir(parents=True)
    cache.path_of(key).write_bytes(MAGIC_V1 + hashlib.sha256(buf.getvalue()).digest() + buf.getvalue())
    assert cache.get(key) is None and not cache.path_of(key).exists()


# -- issue 25: the Python API validates its keywords and raises typed errors ---------------------------------

@pytest.mark.parametrize("keywords, needle", [
    ({"psnr": "abc"}, "keyword psnr=['abc'] is not valid: it must be a number or a list of numbers"),
    ({"psnr": [20, "x"]}, "psnr"),
    ({"threads": "x"}, "keyword threads='x' is not valid: it must be a whole number >= 1"),
    ({"threads": 0}, "threads=0"),
    ({"batch_size": 2.5}, "batch_size=2.5"),
    ({"device": "gpu"}, "device='gpu'"),
    ({"gpus_per_job": -1}, "gpus_per_job=-1"),
    ({"subset": -3}, "subset=-3"),
    ({"full": "yes"}, "full='yes'"),
    ({"out": 5}, "out=5"),
    ({"loader": "not callable"}, "loader="),
    ({"executor": 3}, "executor=3"),
    ({"psnrs": [20]}, "unknown keyword 'psnrs'"),
])
def test_the_python_api_raises_a_typed_error_naming_the_keyword(keywords, needle, tmp_path):
    import bench
    from bench.core.errors import BadKeyword, UserError

    with pytest.raises(BadKeyword) as err:
        bench.evaluate(str(tmp_path / "never-read.toml"), **keywords)
    assert isinstance(err.value, UserError) and err.value.keyword == next(iter(keywords))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_the_python_api_takes_one_name_as_a_list_of_one(finished):
    """Regression (issue 25): defenses="nosuch" said "defense 'n'" (the string was iterated)."""
    import bench
    from bench.core.errors import UserError

    with pytest.raises(UserError, match="defense 'nosuch' is not in suite"):
        bench.evaluate(finished["files"]["suite"], defenses="nosuch", out=finished["files"]["out"],
                       cache_dir=finished["cache"], threads=1)
    assert finished["results"].read_bytes() == finished["bytes"]


def test_a_board_row_counts_each_jobs_wall_time_once():
    """Regression (issue 25): every row of a job records the job's wall time, and a --submit entry summed them
    (1,601 s for a 101 s run)."""
    from bench.reports.boards import job_walls

    def row(evaluated, attack, wall):
        return {"authorized": "a", "evaluated": evaluated, "attack": attack, "trial": 0, "defense": "d",
                "point": {"psnr": 20.0}, "release": "float", "provenance": {"wall_s": wall}}

    cells = [row(e, "none", 10.0) for e in ("a", "b", "c")] + [row(e, "jpeg", 5.0) for e in ("a", "b")]
    assert sum(job_walls(cells).values()) == 15.0


def test_allow_mixed_adds_rows_to_a_folder_of_another_suite(finished, tmp_path):
    import shutil

    folder = tmp_path / "mixed-run"
    folder.mkdir()
    shutil.copyfile(finished["tmp"] / "other-cells.jsonl", folder / "results.jsonl")  # another suite's cells
    args = ["run", finished["files"]["suite"], "--out", str(folder), "--cache-dir", finished["cache"],
            "--reports", str(tmp_path / "rep"), "--threads", "1", "--no-progress"]
    assert main(args) == 2
    assert main([*args, "--allow-mixed"]) == 0
    suites = {json.loads(line)["suite"] for line in (folder / "results.jsonl").read_text().splitlines()}
    assert suites == {"bad-input", "other-suite"}
