"""A trained run scored on other data (experiments/rescore.py): what the given
config may change, whose speakers the run heard, where the scores go.

Scoring a trained run end to end (it needs a training run) is
tests/reliability/test_evaluate.py's.
"""

import pytest

from mtl_ser.data import corpora
from mtl_ser.errors import ConfigError, WorkdirError
from mtl_ser.experiments import rescore


def test_the_given_config_may_change_the_data_only(smoke_config, tmp_path):
    given = smoke_config.to_dict()
    given["corpus"]["root"] = str(tmp_path / "elsewhere")
    given["split"]["val_speakers"], given["split"]["test_speakers"] = "spk00", "spk01"
    given["data"]["eval_batch_size"] = 32  # How, not what, it computes.
    rescore.check_config(str(tmp_path), smoke_config, given)
    given["model"]["width"] = 0.5
    given["data"]["normalisation"] = "speaker"
    with pytest.raises(WorkdirError) as error:
        rescore.check_config(str(tmp_path), smoke_config, given)
    message = str(error.value)
    assert message.startswith(str(tmp_path / "config.json")) and "\n" not in message
    saved = smoke_config
    assert f"model.width: {saved.model.width!r} -> 0.5" in message
    assert f"data.normalisation: {saved.data.normalisation!r} -> 'speaker'" in message
    for allowed in ("corpus.root", "split.val_speakers", "data.eval_batch_size"):
        assert allowed not in message


def test_training_speakers_are_the_speakers_neither_validated_nor_tested(
    smoke_config,
):
    c = smoke_config
    everyone = {u.speaker for u in corpora.load_corpus(c.corpus)}
    for val, test in (("spk02,spk03", "spk04,spk05"), ("spk00", "spk05,spk01")):
        c.split.val_speakers, c.split.test_speakers = val, test
        held_out = set(val.split(",")) | set(test.split(","))
        assert rescore.training_speakers(c) == everyone - held_out


def test_the_speakers_line_warns_of_speakers_the_run_trained_on():
    results = {
        "speakers": {"val": ["spk02"], "test": ["spk00", "spk04"]},
        "seen_in_training": [],
    }
    assert rescore.speakers_line(results) == (
        "Scored speakers: val spk02; test spk00, spk04; none of them in the run's "
        "training split"
    )
    results["seen_in_training"] = ["spk00"]
    assert rescore.speakers_line(results).endswith(
        "; WARNING: the run trained on spk00: not speaker-independent"
    )


def test_scores_never_go_to_the_runs_own_folder(smoke_config, tmp_path):
    workdir = tmp_path / "run"  # Not even a run: refused before it is read.
    same = str(workdir / "sub" / "..")
    with pytest.raises(ConfigError, match="the run's own folder"):
        rescore.rescore(str(workdir), smoke_config, same, verbose=False)
    assert not list(tmp_path.iterdir())
