"""The paper's comparison sweep: labels, CV variants, paired tables, a real run."""

import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

import tests
from mtl_ser.data import splits
from mtl_ser.experiments import cv, paired, sweeps

ROOT = tests.ROOT


def test_a_label_names_the_variant_and_is_not_a_config_field():
    overrides = {"variant": "vgg_mtl", "model.name": "vgg11", "seed": 2}
    assert sweeps.variant_name(overrides) == "vgg_mtl,seed=2"
    assert sweeps.group_name(overrides) == "vgg_mtl"
    base = ml_collections.ConfigDict({"seed": 0, "model": {"name": "alexnet"}})
    config = sweeps.apply_overrides(base, overrides)
    assert (config.model.name, config.seed) == ("vgg11", 2)
    assert "variant" not in config
    with pytest.raises(ValueError, match="share the folder 'vgg_mtl,seed=2'"):
        sweeps.check_unique([overrides, {**overrides, "model.name": "vgg16"}])


def _write_results(run_dir, ua, step_ms=10.0):
    os.makedirs(run_dir, exist_ok=True)
    with open(os.path.join(run_dir, "results.json"), "w") as f:
        json.dump({"scalars": {"test/ua/emotion": ua}, "step_time_ms": step_ms}, f)


def _fake_cv(run_dir, uas):
    """A complete CV run folder: one fold per UA, and its cv_results.json."""
    folds = [splits.Fold(f"fold{i}", (f"v{i}",), (f"t{i}",)) for i in range(len(uas))]
    for i, (fold, ua) in enumerate(zip(folds, uas, strict=True)):
        _write_results(cv.fold_dir(run_dir, i, fold), ua)
    rows = [
        {
            "fold": f.name,
            "val_speakers": f.val_speakers,
            "test_speakers": f.test_speakers,
        }
        for f in folds
    ]
    with open(os.path.join(run_dir, "cv_results.json"), "w") as f:
        json.dump({"folds": rows}, f)  # What sweeps reads of cv.write's file.


# UA per (variant, seed) over five folds.
_UAS = {
    ("stl", 0): [0.50, 0.60, 0.40, 0.70, 0.55],
    ("stl", 1): [0.52, 0.58, 0.44, 0.66, 0.55],
    ("mtl", 0): [0.60, 0.61, 0.50, 0.70, 0.65],
    ("mtl", 1): [0.62, 0.65, 0.46, 0.71, 0.66],
}


def _fake_cv_sweep(root):
    variants = [
        {"variant": kind, "seed": seed} for kind in ("stl", "mtl") for seed in (0, 1)
    ]
    base = ml_collections.ConfigDict({"seed": 0})

    def train(config, run_dir):
        kind = os.path.basename(run_dir).split(",")[0]
        _fake_cv(run_dir, _UAS[(kind, config.seed)])

    return sweeps.run(base, variants, str(root), train)


def test_cv_variants_are_averaged_over_folds_and_seeds(tmp_path):
    runs = _fake_cv_sweep(tmp_path)
    rows = {r["variant"]: r for r in sweeps.summarise(runs, ["test/ua/emotion"])}
    assert (rows["mtl"]["seeds"], rows["mtl"]["runs"]) == (2, 10)
    expected = np.array(_UAS[("mtl", 0)] + _UAS[("mtl", 1)])
    assert rows["mtl"]["test/ua/emotion"] == pytest.approx(
        (expected.mean(), expected.std())
    )
    # A complete CV variant (cv_results.json) is not run again.
    again = sweeps.run(
        ml_collections.ConfigDict({"seed": 0}),
        [{"variant": "mtl", "seed": 0}],
        str(tmp_path),
        lambda *a: pytest.fail("a complete variant was trained again"),
    )
    assert again == [({"variant": "mtl", "seed": 0}, str(tmp_path / "mtl,seed=0"))]


def test_paired_comparison_averages_seeds_per_fold(tmp_path):
    runs = _fake_cv_sweep(tmp_path)
    (c,) = paired.paired(runs, [("mtl", "stl")], "test/ua/emotion")
    mtl = np.mean([_UAS[("mtl", 0)], _UAS[("mtl", 1)]], axis=0)
    stl = np.mean([_UAS[("stl", 0)], _UAS[("stl", 1)]], axis=0)
    assert [u["unit"] for u in c["units"]] == [f"fold{i}" for i in range(5)]
    np.testing.assert_allclose([u["difference"] for u in c["units"]], mtl - stl)
    assert c["mean_difference"] == pytest.approx((mtl - stl).mean())
    # MTL is better on all five folds: the exact two-sided p is 2 / 2**5.
    assert (c["wins"], c["losses"], c["ties"]) == (5, 0, 0)
    assert c["p_value"] == pytest.approx(0.0625)
    text = paired.markdown([c])
    assert "| fold0 | 0.5100 | 0.6100 | +0.1000 |" in text
    assert "better on 5, worse on 0, equal on 0 of 5" in text


def test_paired_comparison_of_single_runs_pairs_seeds(tmp_path):
    runs = []
    for kind, uas in (("stl", [0.5, 0.6, 0.7]), ("mtl", [0.5, 0.5, 0.8])):
        for seed, ua in enumerate(uas):
            overrides = {"variant": kind, "seed": seed}
            run_dir = str(tmp_path / sweeps.variant_name(overrides))
            _write_results(run_dir, ua)
            runs.append((overrides, run_dir))
    (c,) = paired.paired(runs, [("mtl", "stl")], "test/ua/emotion")
    assert [u["unit"] for u in c["units"]] == ["seed=0", "seed=1", "seed=2"]
    assert (c["wins"], c["losses"], c["ties"]) == (1, 1, 1)
    with pytest.raises(ValueError, match="mtl vs vgg_stl: no models in common"):
        paired.paired(runs, [("mtl", "vgg_stl")], "test/ua/emotion")


def test_gallery_links_the_first_runs_figures(tmp_path):
    runs = _fake_cv_sweep(tmp_path)
    first_fold = tmp_path / "mtl,seed=0" / "fold00_fold0"
    (first_fold / "tsne.png").write_bytes(b"png")
    (tmp_path / "mtl,seed=1" / "fold00_fold0" / "tsne.png").write_bytes(b"png")
    text = sweeps.gallery_markdown(runs, str(tmp_path), ["tsne.png"])
    assert "![mtl: tsne.png](mtl,seed=0/fold00_fold0/tsne.png)" in text
    assert "seed=1" not in text and "### stl" not in text  # stl has no figure.


def test_paper_sweep_expands_to_the_four_experiments():
    from configs.sweeps import paper

    variants = paper.get_sweep("corpus=emodb,seeds=2,cpu")
    assert [sweeps.variant_name(v) for v in variants] == [
        f"{name},seed={seed}"
        for name in ("alexnet_stl", "alexnet_mtl", "vgg_stl", "vgg_mtl")
        for seed in (0, 1)
    ]
    base = paper.get_config("corpus=emodb,cpu")
    assert (base.split.protocol, base.split.folds) == ("kfold", 5)
    by_name = {sweeps.variant_name(v): v for v in variants}
    vgg_mtl = sweeps.apply_overrides(base, by_name["vgg_mtl,seed=1"])
    assert (vgg_mtl.model.name, vgg_mtl.model.batch_norm) == ("vgg11", True)
    assert (vgg_mtl.tasks, vgg_mtl.weighting.name) == ("emotion,gender", "uncertainty")
    alexnet_stl = sweeps.apply_overrides(base, by_name["alexnet_stl,seed=0"])
    assert (alexnet_stl.tasks, alexnet_stl.weighting.name) == ("emotion", "equal")
    assert alexnet_stl.model.width == 0.25
    paper_scale = sweeps.apply_overrides(
        paper.get_config("corpus=iemocap"), paper.get_sweep("corpus=iemocap")[0]
    )
    assert paper_scale.model.width == 1.0
    assert paper_scale.split.protocol == "group" and paper_scale.split.within_group


def test_a_real_paper_sweep_writes_the_table_and_resumes(corpus_root, tmp_path):
    command = [
        sys.executable,
        "launch.py",
        "--mode=sweep",
        "--config=configs/sweeps/paper.py:smoke",
        f"--workdir={tmp_path}",
        f"--config.corpus.root={corpus_root}",
        f"--config.features.cache_dir={os.path.join(corpus_root, 'cache')}",
    ]
    subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    text = (tmp_path / "sweep.md").read_text()
    lines = text.splitlines()
    assert lines[0].startswith("| variant | seeds | runs | accuracy | precision |")
    rows = [line.split(" | ")[0].strip("| ") for line in lines[2:6]]
    assert rows == ["alexnet_stl", "alexnet_mtl", "vgg_stl", "vgg_mtl"]
    assert "**alexnet_mtl vs alexnet_stl** (test/ua/emotion)" in text
    assert "**vgg_mtl vs vgg_stl** (test/ua/emotion)" in text
    for name in ("alexnet_mtl", "vgg_mtl"):
        with open(tmp_path / f"{name},seed=0" / "results.json") as f:
            results = json.load(f)
        assert "test/ua/gender" in results["scalars"]  # The multitask runs.
    with open(tmp_path / "vgg_stl,seed=0" / "results.json") as f:
        assert "test/ua/gender" not in json.load(f)["scalars"]
    again = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert again.stdout.count("complete, skipped") == 4
    assert (tmp_path / "sweep.md").read_text() == text
