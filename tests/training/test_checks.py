"""Config checks, one section at a time (training/checks.py).

Bad configs reaching a run, a flag or a process are tests/reliability/
test_config_errors.py's; here each section's check is called on its own.
"""

import pytest

from mtl_ser.errors import ConfigError
from mtl_ser.training import checks

SECTIONS = {f.__name__.removeprefix("_check_"): f for f in checks.CHECKS}


@pytest.mark.parametrize(
    "section, key, value",
    [
        ("model", "model.name", "resnet"),
        ("model", "model.width", 0),
        ("model", "model.dtype", "float16"),
        ("train", "optim.learning_rate", 0.0),
        ("train", "train.log_every", 0),
        ("train", "train.max_skipped_steps", -1),
        ("train", "train.best_metric", "test/ua/emotion"),
        ("train", "report.gradcam_per_class", -1),
        ("train", "report.tsne_perplexity", 0.0),
        ("split", "corpus.name", "timit"),
        ("split", "split.protocol", "random"),
        ("split", "split.fold", -2),
        ("data", "data.eval_batch_size", 6),  # 4 devices.
        ("data", "data.num_workers", -1),
        ("data", "data.inputs", "whole"),
        ("data", "data.crop_frames", 0),
        ("data", "data.freq_mask_bands", -1),
        ("weighting", "weighting.name", "average"),
        ("weighting", "weighting.per_task_grads", "scan"),
        ("weighting", "regression_loss", "mae"),
    ],
)
def test_each_section_names_its_bad_field_in_one_line(
    smoke_config, section, key, value
):
    checks.validate_config(smoke_config)
    *path, name = key.split(".")
    node = smoke_config
    for part in path:
        node = node[part]
    node[name] = value
    with pytest.raises(ConfigError) as error:
        SECTIONS[section](smoke_config)
    message = str(error.value)
    assert message.startswith(f"{key}={value!r}") and "\n" not in message
    for other, check in SECTIONS.items():  # No other section reads the field.
        if other != section:
            check(smoke_config)
    with pytest.raises(ConfigError) as whole:
        checks.validate_config(smoke_config)
    assert str(whole.value) == message


def test_a_methods_own_error_is_a_config_error_naming_its_field(smoke_config):
    smoke_config.weighting.name = "fixed"
    smoke_config.weighting.fixed_weights = "1,2"  # Five tasks.
    with pytest.raises(ConfigError, match=r"^weighting.fixed_weights='1,2': needs"):
        SECTIONS["weighting"](smoke_config)
