"""Every config builds, is locked against typos, and runs in smoke mode."""

import glob
import importlib
import os

import pytest

import tests
from mtl_ser.training import loop

ROOT = tests.ROOT


def _defines_a_config(path):  # Helpers (common.py, args.py) define none.
    with open(path) as f:
        return "\ndef get_config(" in f.read()


CONFIGS = sorted(
    os.path.basename(p)[:-3]
    for p in glob.glob(os.path.join(ROOT, "configs", "*.py"))
    if _defines_a_config(p)
)


def test_the_expected_configs_exist():
    expected = {"default", "synthetic", "alexnet_stl", "alexnet_mtl", "vgg_stl"}
    assert expected | {"vgg_mtl"} <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_runs_in_smoke_mode(name, corpus_root, tmp_path):
    config = importlib.import_module(f"configs.{name}").get_config("smoke")
    config.corpus.root = corpus_root
    config.features.cache_dir = os.path.join(corpus_root, "cache")
    config.train.num_steps = 2
    results = loop.train_and_evaluate(config, str(tmp_path / name))
    assert results["step"] == 2
    assert 0.0 <= results["scalars"]["test/ua/emotion"] <= 1.0


def test_bfloat16_compute_runs(smoke_config, tmp_path):
    smoke_config.model.dtype = "bfloat16"
    smoke_config.train.num_steps = 2
    results = loop.train_and_evaluate(smoke_config, str(tmp_path / "bf16"))
    assert 0.0 <= results["scalars"]["test/ua/emotion"] <= 1.0


def test_paper_configs_choose_corpus_and_tasks():
    mtl = importlib.import_module("configs.vgg_mtl").get_config("corpus=emodb")
    stl = importlib.import_module("configs.alexnet_stl").get_config()
    assert mtl.corpus.name == "emodb" and mtl.tasks == "emotion,gender"
    assert mtl.weighting.name == "uncertainty" and mtl.model.name == "vgg11"
    assert stl.tasks == "emotion" and stl.weighting.name == "equal"
    with pytest.raises(ValueError, match="corpus='timit'"):
        importlib.import_module("configs.vgg_mtl").get_config("corpus=timit")
    with pytest.raises(AttributeError):  # Locked: a typo is an error.
        stl.lock()
        stl.optim.learning_rat = 1.0


def test_benchmarks_load_a_config_with_its_argument():
    from benchmarks import common

    config = common.load_config(os.path.join(ROOT, "configs/vgg_mtl.py:corpus=emodb"))
    assert config.corpus.name == "emodb" and config.model.name == "vgg11"
    assert common.load_config(os.path.join(ROOT, "configs/synthetic.py")).seed == 0
    with pytest.raises(FileNotFoundError, match="nope.py is not a config file"):
        common.load_config(os.path.join(ROOT, "configs/nope.py:smoke"))


def test_emodb_recipe_arguments():
    recipe = importlib.import_module("configs.emodb_loso")
    vgg, alexnet = recipe.get_config(), recipe.get_config("trunk=alexnet,multitask")
    assert (vgg.model.name, vgg.model.width, vgg.tasks) == ("vgg11", 0.125, "emotion")
    assert (alexnet.model.name, alexnet.model.width) == ("alexnet", 0.25)
    assert alexnet.tasks == "emotion,gender" and alexnet.weighting.name == "uncertainty"
    assert vgg.split.protocol == "speaker" and vgg.corpus.name == "emodb"
    assert not vgg.split.cv_validation and vgg.train.evaluate_at == "last"
    assert recipe.get_config("validation").split.cv_validation
    assert len(vgg.emotion_classes.split(",")) == 7
    with pytest.raises(ValueError, match="trunk='resnet'"):
        recipe.get_config("trunk=resnet")
