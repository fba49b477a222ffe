"""Identity and integrity regressions (issue 14): zoo checksums, the zoo under --cache-dir, seeded random
weights, and transforms whose inputs (the authorized model's normalisation) belong in their identity."""

from __future__ import annotations

import pytest
import torch

from bench.engine.context import EvalContext, RunOptions
from bench.core.errors import UserError
from bench.models.sources import load_model
from bench.models.zoo import load_zoo_model, recipe_for, zoo_path
from bench.suite import load_suite
from conftest import write_suite


def _flip_a_weight_byte(path):
    data = bytearray(path.read_bytes())
    header = int.from_bytes(data[:8], "little")
    data[8 + header + 100] ^= 0x01  # inside the first tensor's bytes: the file still loads
    path.write_bytes(bytes(data))


def test_a_flipped_bit_in_zoo_weights_is_an_error_not_used(tmp_path):
    """Regression (bug 4): a flipped bit in a zoo weight tensor was used silently."""
    first = load_zoo_model("mlp-s0", epochs=1, progress=False, root=tmp_path)
    path = zoo_path("mlp-s0", recipe_for("mlp-s0", 1), tmp_path)
    assert load_zoo_model("mlp-s0", epochs=1, progress=False, root=tmp_path).digest == first.digest
    _flip_a_weight_byte(path)
    with pytest.raises(UserError, match="fail their checksum"):
        load_zoo_model("mlp-s0", epochs=1, progress=False, root=tmp_path)


def test_cache_dir_holds_the_zoo(tmp_path, monkeypatch):
    """Regression (bug 6): --cache-dir did not move the zoo (it stayed under $AUTHBENCH_CACHE)."""
    default = tmp_path / "default"
    monkeypatch.setenv("AUTHBENCH_CACHE", str(default))
    suite = load_suite(str(write_suite(tmp_path / "s.toml")))
    ctx = EvalContext(suite, RunOptions(cache_dir=tmp_path / "mine"))
    ctx.model("mlp-s0")
    assert list((tmp_path / "mine" / "zoo").glob("mlp-s0-*.safetensors"))
    assert not (default / "zoo").exists()


FACTORY = {"source": "torch", "factory": "torchvision.models:resnet18", "kwargs": {"num_classes": 10},
           "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "input_size": [3, 32, 32], "name": "r18"}


def test_random_weights_are_seeded_by_default_and_the_seed_is_recorded(tmp_path):
    """Regression (bug 7): a torch factory without a checkpoint got new random weights in every process."""
    path = tmp_path / "s.toml"
    path.write_text('[suite]\nname = "r"\nseed = 3\n[data]\ndataset = "digits"\n[models]\nauthorized = [\n'
                    '{ source = "torch", factory = "torchvision.models:resnet18", kwargs = { num_classes = 10 }, '
                    'mean = [0.5], std = [0.25], input_size = [1, 32, 32], name = "r18" }]\n'
                    '[[defenses]]\nname = "noise"\n')
    suite = load_suite(str(path))
    torch.manual_seed(123)
    a = EvalContext(suite, RunOptions(cache_dir=tmp_path)).model("r18")
    torch.manual_seed(456)  # whatever the global RNG holds
    b = EvalContext(suite, RunOptions(cache_dir=tmp_path)).model("r18")
    assert a.digest == b.digest and a.init_seed == b.init_seed is not None
    other = load_suite(str(path))
    other.seed = 4
    assert EvalContext(other, RunOptions(cache_dir=tmp_path)).model("r18").digest != a.digest
    explicit = load_model({**FACTORY, "init_seed": 7}, default_seed=99)
    assert explicit.init_seed == 7 and explicit.digest == load_model({**FACTORY, "init_seed": 7}).digest


def test_noise_encodings_of_authorized_models_with_other_normalisation_are_not_shared(tmp_path):
    """Regression (bug 8): the noise control's encoding was shared across authorized models whose
    normalisation std differs, so both got one PSNR (24.79 dB where the second is 11.87 dB)."""
    from bench.core.results import read_rows
    from conftest import make_engine

    spec = ("{{ source = \"torch\", factory = \"models_example:tiny_cnn\", "
            'mean = [0.5], std = [{std}], input_size = [1, 32, 32], name = "{name}", init_seed = 0 }}')
    path = tmp_path / "s.toml"
    path.write_text('[suite]\nname = "std"\nseed = 0\n[data]\ndataset = "digits"\nsubset = 16\n[models]\nauthorized = ['
                    + spec.format(std=0.229, name="a") + ", " + spec.format(std=1.0, name="b") + ']\n'
                    '[[defenses]]\nname = "noise"\npsnr = [60]\npsnr_mode = "paper-nominal"\nrelease = ["float"]\n')
    rows = read_rows(make_engine(load_suite(str(path)), tmp_path / "run", cache_dir=tmp_path / "c", progress=False,
                                 threads=1).run().results)
    psnr = {r["authorized"]: r["encoding"]["psnr_true"] for r in rows if r["defense"] == "noise"}
    assert psnr["a"] - psnr["b"] == pytest.approx(20 * __import__("math").log10(1 / 0.229), abs=0.05)


@pytest.mark.parametrize("name", ["../../../escaped", "/abs/path", "a/b", "..", ""])
def test_a_suite_name_that_would_leave_runs_is_refused(tmp_path, name):
    """Regression (bug 5): a suite named '../../../escaped' wrote results outside runs/."""
    path = write_suite(tmp_path / "s.toml")
    path.write_text(path.read_text().replace('name = "mini"', f'name = "{name}"'))
    with pytest.raises(UserError, match="cannot name a folder"):
        load_suite(str(path))


def _suite_with(tmp_path, epochs: int):
    path = tmp_path / "m.toml"
    path.write_text('[suite]\nname = "mid"\nseed = 0\n[data]\ndataset = "digits"\nsubset = 30\n[models]\nauthorized = ['
                    f'{{ source = "zoo", model = "mlp-s0", epochs = {epochs}, name = "m" }}]\n'
                    '[[defenses]]\nname = "noise"\npsnr = [20]\nrelease = ["float"]\n')
    return load_suite(str(path))


def test_resume_binds_the_model_not_its_label(tmp_path):
    """Regression (bug 1): a model changed behind the same label resumed as '6 already done, 0 run' with the
    old model's numbers; now its rows are superseded (kept in the file), recomputed, and read back as the new."""
    from bench.core.results import read_rows
    from conftest import make_engine

    out = tmp_path / "run"
    first = make_engine(_suite_with(tmp_path, 1), out, cache_dir=tmp_path / "c", progress=False, threads=1).run()
    again = make_engine(_suite_with(tmp_path, 1), out, cache_dir=tmp_path / "c", progress=False).run()
    assert first.cells_run == 2 and again.cells_run == 0 and again.superseded == 0
    changed = make_engine(_suite_with(tmp_path, 2), out, cache_dir=tmp_path / "c", progress=False, threads=1).run()
    assert changed.cells_run == 2 and changed.superseded == 2 and changed.cells_done_before == 0
    lines = read_rows(out, all_rows=True)
    rows = read_rows(out)
    assert len(lines) == 4 and len(rows) == 2  # the old rows stay in the file; readers see the new ones
    old = {r["cell"]: r["provenance"]["model_digest"] for r in lines[:2]}
    assert all(r["provenance"]["model_digest"] != old[r["cell"]] for r in rows)


def test_a_second_run_on_the_same_folder_is_refused_while_the_first_runs(tmp_path):
    """Regression (bug 9): two runs on one output folder duplicated every row; the folder is locked."""
    from bench.core.results import ResultWriter, latest

    with ResultWriter(tmp_path / "run"):
        with pytest.raises(UserError, match=r"is in use by a running authbench \(pid \d+"):
            ResultWriter(tmp_path / "run")
    with ResultWriter(tmp_path / "run") as writer:  # released on close (and by the OS on exit or crash)
        writer.append([{"cell": "a", "v": 1}, {"cell": "a", "v": 2}, {"cell": "b", "v": 3}])
    rows, dropped = latest(writer.rows())
    assert dropped == 1 and [r["v"] for r in rows] == [2, 3]


def test_bad_model_specs_are_all_reported_before_the_first_job(tmp_path):
    """Issue 16 (bug 4): a bad checkpoint for the 11th model failed after 88 s of work; every spec is now
    resolved and checked against the data first, and all bad ones are named in one line."""
    from conftest import make_engine

    path = write_suite(tmp_path / "s.toml")
    text = path.read_text().replace(
        'authorized = [', 'authorized = [{ source = "torch", factory = "models_example:tiny_cnn", mean = [0.5], '
        'std = [0.25], input_size = [1, 32, 32], name = "gone", checkpoint = "missing.pt" }, '
        '{ source = "torch", factory = "torchvision.models:resnet18", mean = [0.5, 0.5, 0.5], std = [0.25, 0.25, 0.25], '
        'input_size = [3, 32, 32], name = "rgb" }, ')
    path.write_text(text)
    engine = make_engine(load_suite(str(path)), tmp_path / "run", cache_dir=tmp_path / "c", progress=False)
    with pytest.raises(UserError) as err:
        engine.run()
    message = str(err.value)
    assert "2 of 5 model spec(s) cannot run, nothing was started" in message and "\n" not in message
    assert "gone: checkpoint 'missing.pt'" in message and "rgb: expects inputs of shape (3, 32, 32)" in message
    assert not (tmp_path / "run" / "results.jsonl").exists() or not (tmp_path / "run" / "results.jsonl").read_text()


# -- the results themselves never mix identities (issue 14, "Also") ----------------------------------------

NPZ_SUITE = ('[suite]\nname = "swap"\nseed = 0\n[data]\ndataset = "cifar10"\nsplit = "test"\npath = "{path}"\n'
             '[models]\nauthorized = [{{ source = "torch", factory = "models_example:rgb_cnn", mean = [0.5], std = [0.25], '
             'input_size = [3, 32, 32], name = "m", init_seed = 0 }}, {{ source = "torch", factory = '
             '"models_example:rgb_cnn", mean = [0.5], std = [0.25], input_size = [3, 32, 32], name = "k", init_seed = 1 }}]\n'
             '[[defenses]]\nname = "noise"\npsnr = [10]\nrelease = ["float"]\n')


def _run_npz(tmp_path, out, cache):
    from bench.core.results import read_rows
    from conftest import make_engine

    suite_path = tmp_path / "swap.toml"
    suite_path.write_text(NPZ_SUITE.format(path=tmp_path / "d.npz"))
    summary = make_engine(load_suite(str(suite_path)), out, cache_dir=cache, progress=False, threads=1).run()
    return summary, {r["cell"]: r for r in read_rows(out)}


def _numbers(rows: dict) -> dict:
    """Each cell's measured numbers (metrics and encoding statistics, not the wall times)."""
    return {c: (r["metrics"], {k: v for k, v in (r["encoding"] or {}).items() if not k.endswith("_ms")})
            for c, r in rows.items()}


def test_a_data_file_replaced_behind_the_same_path_and_swapped_cache_files_never_share_a_result(tmp_path):
    """Two .npz files of one shape behind one path (same labels, other pixels), and forward-cache entries
    swapped between keys, each give the results a cold run gives, never the other data's or key's numbers."""
    import numpy as np

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 24)
    np.savez(tmp_path / "d.npz", images=rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8), labels=labels)
    _, first = _run_npz(tmp_path, tmp_path / "run", tmp_path / "cache")
    forward = sorted((tmp_path / "cache" / "forward").rglob("*.bin"))
    assert len(forward) >= 2
    a, b = forward[0].read_bytes(), forward[1].read_bytes()
    forward[0].write_bytes(b), forward[1].write_bytes(a)  # two valid entries, each under the other's key
    swapped, again = _run_npz(tmp_path, tmp_path / "run-swapped", tmp_path / "cache")
    assert swapped.cache["corrupt"] >= 2 and _numbers(again) == _numbers(first)

    np.savez(tmp_path / "d.npz", images=rng.integers(0, 256, (24, 32, 32, 3), dtype=np.uint8), labels=labels)
    resumed, second = _run_npz(tmp_path, tmp_path / "run", tmp_path / "cache")
    _, cold = _run_npz(tmp_path, tmp_path / "run-cold", tmp_path / "cold-cache")
    assert resumed.superseded == len(first) and resumed.cells_done_before == 0
    assert _numbers(second) == _numbers(cold) and _numbers(second) != _numbers(first)
