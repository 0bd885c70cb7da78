"""Run folders and sweep overrides."""

import ml_collections
import pytest

from mtl_ser import layout
from mtl_ser.data import splits


def test_fold_folders_sort_in_fold_order_and_carry_the_folds_name():
    folds = [splits.Fold(f"spk{i}", (), (f"spk{i}",)) for i in (3, 12, 7)]
    dirs = [layout.fold_dir("runs/cv", i, f) for i, f in enumerate(folds)]
    assert dirs == [
        "runs/cv/fold00_spk3",
        "runs/cv/fold01_spk12",
        "runs/cv/fold02_spk7",
    ]
    assert sorted(dirs) == dirs


def test_overrides_make_a_copy_and_unknown_fields_raise():
    base = ml_collections.ConfigDict(
        {"seed": 0, "weighting": {"name": "equal", "rep_grad": False}}
    )
    got = layout.apply_overrides(
        base, {"weighting.name": "mgda", "seed": 2, layout.LABEL: "mgda_seed2"}
    )
    assert (got.weighting.name, got.seed, got.weighting.rep_grad) == ("mgda", 2, False)
    assert (base.weighting.name, base.seed) == ("equal", 0)  # Untouched.
    assert layout.LABEL not in got
    with pytest.raises(KeyError, match="'weighting.nme': no field 'nme'"):
        layout.apply_overrides(base, {"weighting.nme": "mgda"})
    with pytest.raises(KeyError, match="'optim.name': no field 'optim'"):
        layout.apply_overrides(base, {"optim.name": "sgd"})
