"""Sweeps: expansion, overrides, resume, tables; the weighting sweep file."""

import glob
import json
import os
import subprocess
import sys

import ml_collections
import pytest

import tests
from mtl_ser.experiments import sweeps
from mtl_ser.training import loop

ROOT = tests.ROOT


def test_product_expands_dotted_axes():
    variants = sweeps.product(weighting__name=["equal", "mgda"], seed=[0, 1])
    assert variants == [
        {"weighting.name": "equal", "seed": 0},
        {"weighting.name": "equal", "seed": 1},
        {"weighting.name": "mgda", "seed": 0},
        {"weighting.name": "mgda", "seed": 1},
    ]
    assert sweeps.variant_name(variants[3]) == "name=mgda,seed=1"


def test_overrides_copy_the_config_and_reject_unknown_fields():
    base = ml_collections.ConfigDict({"seed": 0, "weighting": {"name": "equal"}})
    out = sweeps.apply_overrides(base, {"weighting.name": "mgda", "seed": 3})
    assert (out.weighting.name, out.seed) == ("mgda", 3)
    assert base.weighting.name == "equal"
    with pytest.raises(KeyError, match="weighting.nmae"):
        sweeps.apply_overrides(base, {"weighting.nmae": "x"})


def _fake_train(values):
    """A train_fn writing results.json with a UA taken from `values`."""
    calls = []

    def train(config, run_dir):
        calls.append(run_dir)
        os.makedirs(run_dir)
        ua = values[(config.weighting.name, config.seed)]
        with open(os.path.join(run_dir, "results.json"), "w") as f:
            json.dump(
                {
                    "scalars": {"test/ua/emotion": ua},
                    "step_time_ms": 10.0 if config.weighting.name == "equal" else 25.0,
                },
                f,
            )

    return train, calls


def test_run_skips_complete_variants_and_tables_mean_and_std(tmp_path):
    base = ml_collections.ConfigDict({"seed": 0, "weighting": {"name": "equal"}})
    variants = sweeps.product(weighting__name=["equal", "mgda"], seed=[0, 1])
    values = {("equal", 0): 0.5, ("equal", 1): 0.7, ("mgda", 0): 0.6, ("mgda", 1): 0.6}
    train, calls = _fake_train(values)
    sweeps.run(base, variants[:2], str(tmp_path), train)  # Interrupted sweep.
    runs = sweeps.run(base, variants, str(tmp_path), train)
    assert len(calls) == 4  # The first two were not run again.
    rows = sweeps.summarise(
        runs, ["test/ua/emotion"], reference={"weighting.name": "equal"}
    )
    by_name = {r["variant"]: r for r in rows}
    assert by_name["name=equal"]["test/ua/emotion"] == pytest.approx((0.6, 0.1))
    assert by_name["name=mgda"]["seeds"] == 2
    assert by_name["name=mgda"]["relative_step_time"] == pytest.approx(2.5)
    text = sweeps.write_tables(rows, ["test/ua/emotion"], str(tmp_path))
    assert "0.6000 ± 0.1000" in text
    with open(tmp_path / "sweep.csv") as f:
        assert f.readline().startswith("variant,seeds,runs,test/ua/emotion_mean")


def test_weighting_sweep_names_every_registered_method():
    from configs.sweeps import weighting as sweep_file
    from mtl_ser import weighting

    assert set(sweep_file.NAMES) == set(weighting.METHODS) - {"fixed"}


def test_weighting_sweep_runs_only_the_methods_named():
    from configs.sweeps import weighting as sweep_file

    variants = sweep_file.get_sweep("only=equal+stch,seeds=2")
    assert [(v["weighting.name"], v["seed"]) for v in variants] == [
        ("equal", 0),
        ("equal", 1),
        ("stch", 0),
        ("stch", 1),
    ]
    with pytest.raises(ValueError, match="unknown methods"):
        sweep_file.get_sweep("only=equal+nope")
    # With options=True, also the documented options of the methods named.
    variants = sweep_file.get_sweep("only=equal+moco,options=True")
    assert variants[:2] == [
        {"weighting.name": "equal", "seed": 0},
        {"weighting.name": "moco", "seed": 0},
    ]
    moco = [o for o in sweep_file.OPTIONS if o["weighting.name"] == "moco"]
    assert variants[2:] == [{**moco[0], "seed": 0}] and len(moco) == 1
    whole = sweep_file.get_sweep("seeds=1")
    assert len(whole) == len(sweep_file.NAMES) + len(sweep_file.OPTIONS)


@pytest.mark.parametrize("best", ["speaker", "utterance"])
def test_normalisation_sweep_pairs_name_its_variants(best):
    from configs.sweeps import emodb_normalisation as sweep_file

    arg = f"best={best},smoke"
    base = sweep_file.get_config(arg)
    variants = sweep_file.get_sweep(arg)
    sweeps.check_unique(variants)
    labels = {v[sweeps.LABEL] for v in variants}
    for first, second in sweep_file.PAIRS(arg):
        assert {first, second} <= labels
        assert second.startswith("stl_")
    for variant in variants:
        config = sweeps.apply_overrides(base, variant)
        assert config.data.normalisation in ("train", "speaker", "utterance")
        if variant[sweeps.LABEL].startswith("mtl_"):
            assert config.data.normalisation == best
            assert config.tasks == "emotion,gender"


def test_sweep_prints_one_launch_command_per_variant(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "launch.py",
            "--mode=sweep",
            "--config=configs/sweeps/weighting.py:smoke",
            f"--workdir={tmp_path}",
            "--sweep.print_commands",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    from configs.sweeps import weighting as sweep_file

    lines = out.stdout.strip().splitlines()
    assert len(lines) == len(sweep_file.get_sweep())
    assert lines[0] == (
        "python launch.py --config=configs/sweeps/weighting.py:smoke "
        f"--workdir={tmp_path}/name=equal,seed=0 "
        "--config.weighting.name=equal --config.seed=0"
    )


def test_printed_commands_carry_the_sweeps_flags_and_cv_mode(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "launch.py",
            "--mode=sweep",
            "--config=configs/sweeps/paper.py:corpus=emodb,seeds=2",
            f"--workdir={tmp_path}",
            f"--config.corpus.root={tmp_path}",
            "--sweep.print_commands",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 4 * 2
    assert lines[0].startswith(
        "python launch.py --config=configs/sweeps/paper.py:corpus=emodb,seeds=2 "
        f"--workdir={tmp_path}/alexnet_stl,seed=0 --config.corpus.root={tmp_path} "
        "--mode=cv --config.model.name=alexnet "
    )
    assert all("--mode=cv" in line for line in lines)  # EmoDB is cross-validated.
    assert "--config.tasks=emotion,gender" in lines[2]


def test_a_real_two_variant_sweep_reports_step_times(smoke_config, tmp_path):
    smoke_config.train.num_steps = 4
    smoke_config.train.log_every = 1
    variants = sweeps.product(weighting__name=["equal", "uncertainty"], seed=[0])
    runs = sweeps.run(smoke_config, variants, str(tmp_path), loop.train_and_evaluate)
    rows = sweeps.summarise(runs, reference={"weighting.name": "equal"})
    for row in rows:
        ua, _ = row["test/ua/emotion"]
        assert 0.0 <= ua <= 1.0
        assert row["step_time_ms"][0] > 0
    assert rows[0]["relative_step_time"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "path",
    sorted(
        p
        for p in glob.glob(os.path.join(ROOT, "configs", "sweeps", "*.py"))
        if not os.path.basename(p).startswith("_")
    ),
)
def test_every_sweep_file_expands_to_valid_configs(path):
    from mtl_ser.training import checks

    module = sweeps.load(path)
    variants = module.get_sweep("smoke")
    assert variants
    names = [sweeps.variant_name(v) for v in variants]
    assert len(set(names)) == len(names), "two variants would share a folder"
    base = module.get_config("smoke")
    for overrides in variants:
        checks.validate_config(sweeps.apply_overrides(base, overrides))
