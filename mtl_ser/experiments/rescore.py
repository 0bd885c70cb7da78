"""A trained run scored on other data: `--mode=evaluate --eval_out=FOLDER`.

`--mode=evaluate` alone scores a run on its own held-out speakers. Scoring it
on another corpus or another split is a separate, explicit act: the given
config may change the corpus and the split only (what the model is, and how
its input is made, must stay the run's), the run's own training statistics
normalise the new data (normalisation.json, as prediction does), and the
results go to their own folder, never the run's results.json or report.md.
They name the speakers scored and those of them the run trained on: scores of
a speaker the model has heard are no speaker-independent figure.
"""

import os

import numpy as np

from mtl_ser import tasks as tasks_lib
from mtl_ser.data import corpora, run_data
from mtl_ser.errors import ConfigError
from mtl_ser.files import write_json
from mtl_ser.outputs import predict
from mtl_ser.training import evaluate
from mtl_ser.training import workdir as workdir_lib

# What the given config may change: which utterances are scored, and where
# they are; every other SCORED field must be the run's.
OTHER_DATA = ("corpus.", "split.")

FILENAME = "results.json"


def check_config(workdir: str, saved, given: dict) -> None:
    """Refuses a given config that changes more than the data (one line).

    Raises:
      WorkdirError: naming each field that would change the model or its input.
    """
    changed = workdir_lib.scored_difference(saved, given, allowed=OTHER_DATA)
    if changed:
        raise workdir_lib.WorkdirError(
            f"{os.path.join(workdir, 'config.json')}: --eval_out scores the run on "
            "other data, and the given config changes the model or its input "
            f"(saved -> given): {'; '.join(changed)}. Change corpus.* and split.* "
            "only"
        )


def training_speakers(config) -> set:
    """The speakers of the run's training split (from its config and corpus)."""
    tasks = tasks_lib.make_tasks(
        config.tasks, config.emotion_classes, config.regression_loss
    )
    kept = run_data.labelled(corpora.load_corpus(config.corpus), tasks[0])
    return {u.speaker for u in run_data.split_utterances(config.split, kept)["train"]}


def rescore(workdir: str, given, out: str, *, verbose: bool = True) -> dict:
    """Scores the run in `workdir` on the val and test splits of `given`.

    Args:
      workdir: the trained run.
      given: the config naming the other data (a locked ConfigDict).
      out: the folder for results.json (not `workdir` itself).
      verbose: print the data's split summary.

    Returns:
      The results dict written to `<out>/results.json`: scalars, confusion and
      classes as a run's, plus "run", "checkpoint", "corpus", "speakers"
      (split -> the speakers scored) and "seen_in_training" (those of them the
      run trained on).

    Raises:
      WorkdirError, ConfigError: the run, the config or `out` cannot work;
        raised before any prediction is computed.
    """
    if os.path.abspath(out) == os.path.abspath(workdir):
        raise ConfigError(
            f"--eval_out={out}: the run's own folder; scores of other data go "
            "to a folder of their own"
        )
    saved = workdir_lib.load_config(workdir)
    check_config(workdir, saved, given.to_dict())
    workdir_lib.check_writable(out, "--eval_out")
    trained_on = training_speakers(saved)
    predictor = predict.Predictor(workdir, verbose=verbose)
    data = run_data.build_data(given, predictor.tasks, verbose=verbose)
    scalars, confusion, speakers = _scores(predictor, data, saved)
    scored = {s for names in speakers.values() for s in names}
    results = {
        "run": os.path.abspath(workdir),
        "checkpoint": dict(zip(("kind", "step"), predictor.checkpoint, strict=True)),
        "corpus": {"name": given.corpus.name, "root": given.corpus.root},
        "speakers": speakers,
        "seen_in_training": sorted(scored & trained_on),
        "scalars": scalars,
        "confusion": {k: {t: np.asarray(m).tolist() for t, m in v.items()}
                      for k, v in confusion.items()},
        "classes": {t.name: list(t.classes) for t in predictor.tasks if t.classes},
    }  # fmt: skip
    write_json(os.path.join(out, FILENAME), results)  # Process 0 only.
    return results


def _scores(predictor, data, saved) -> tuple[dict, dict, dict]:
    """(scalars, confusion, speakers scored) of the run on data's val and test
    splits, standardised by the run's own training statistics."""
    scalars, confusion, speakers = {}, {}, {}
    for name in ("val", "test"):
        split = data.splits[name]
        if not len(split):
            continue
        preds = evaluate.predict_split(
            predictor.eval_fn,
            predictor.state,
            split,
            predictor.statistics,  # The run's training statistics.
            predictor.mesh,
            progress=saved.train.progress_bar,
            **evaluate.windowing(saved.data),
        )
        preds = predictor.statistics.unstandardise(preds)
        s, conf = evaluate.split_metrics(name, predictor.tasks, split, preds)
        scalars.update(s)
        confusion[name] = conf
        speakers[name] = sorted(set(split.speakers))
    return scalars, confusion, speakers


def speakers_line(results: dict) -> str:
    """One line: the speakers scored, and any the run trained on."""
    scored = "; ".join(f"{k} {', '.join(v)}" for k, v in results["speakers"].items())
    seen = results["seen_in_training"]
    warning = (
        f"; WARNING: the run trained on {', '.join(seen)}: not speaker-independent"
        if seen
        else "; none of them in the run's training split"
    )
    return f"Scored speakers: {scored}{warning}"
