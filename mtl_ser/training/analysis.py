"""What the chosen model does with the test split, saved for report.md's figures.

At the final evaluation (training or --mode=evaluate) `write_analysis` saves
`<workdir>/analysis.npz` for the evaluated (best) state:

- `embedding` [N, D]: the trunk's embedding (`MultiTaskModel.embed`) of each
  test utterance, averaged over its evaluation windows as the predictions are,
  with `uid`, `speaker`, `gender` [N] ("" where unknown: gender comes from the
  gender task's labels) and, when a task is a classification, `label` [N] (its
  class ids, -1 where unlabelled), `task` and `classes`. The t-SNE is drawn
  from these.
- Grad-CAM (Selvaraju et al. 2017) of n chosen test utterances: `cam_uid`,
  `cam_class` (the class explained, the true one), `cam_pred` and `cam_prob`
  (the window's predicted class and its probability), `cam_start` (the
  window's first frame), `cam_logmel` [n, T, F] (the window in dB) and
  `cam_map` [n, T, F]. For a window x and class c: A [h, w, K] are the last
  conv layer's activations (after its ReLU, before its pool), w_k the mean
  over h, w of d logit_c / d A_k (jax.grad through the Flax model), and the
  map ReLU(sum_k w_k A_k), resized bilinearly to the window's [T, F] (time x
  mel).

The task is the main task when it is a classification, else the first
classification task. Grad-CAM looks at one window per utterance: its centre
window of data.crop_frames (as data.inputs="fixed" evaluates; a shorter
utterance is padded), the input size the model was trained on, so one map is
one picture. For each class c, it takes report.gradcam_per_class test
utterances of true class c: those whose centre window the model classifies as
c, most confident (highest p(c)) first; when too few are correct, the
class-c utterances with the highest p(c) fill the places. The map explains c,
the true class.
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from mtl_ser import tasks as tasks_lib
from mtl_ser.data import batches, pipeline
from mtl_ser.training import evaluate, sharding
from mtl_ser.training import state as state_lib

FILENAME = "analysis.npz"


def embed_step(state, x, *, model) -> dict:
    """{"embedding": [B, D] float32 trunk outputs} of windows x [B, T, F, 1]."""
    embedding = model.apply(
        state_lib.eval_variables(state), x, train=False, method="embed"
    )
    return {"embedding": embedding}


def gradcam(model, variables, x, class_ids, *, task: str):
    """Grad-CAM maps of a batch of windows (see the module docstring).

    Windows are independent at evaluation (no batch statistics), so the
    gradient of the summed scores holds each window's own gradient.

    Args:
      model: a MultiTaskModel whose trunk marks its last conv layer
        ("last_conv": AlexNet, VGG).
      variables: the model's Flax variables.
      x: windows [B, T, F, 1].
      class_ids: [B] int, the class each map explains.
      task: the classification task's name.

    Returns:
      (maps [B, T, F] float32 >= 0, logits [B, C] of `task`).
    """

    def forward(perturbations):
        (outputs, _), updates = model.apply(
            {**variables, "perturbations": perturbations},
            x,
            train=False,
            mutable=["intermediates"],
        )
        logits = outputs[task]  # [B, C]
        scores = jnp.take_along_axis(logits, class_ids[:, None], axis=1)
        (acts,) = updates["intermediates"]["trunk"]["last_conv"]
        return scores.sum(), (acts, logits)

    def activations(variables):
        _, updates = model.apply(variables, x, train=False, mutable=["intermediates"])
        return updates["intermediates"]["trunk"]["last_conv"][0]

    shape = jax.eval_shape(activations, variables)  # [B, h, w, K]
    zeros = {"trunk": {"last_conv": jnp.zeros(shape.shape, shape.dtype)}}
    grads, (acts, logits) = jax.grad(forward, has_aux=True)(zeros)
    d_acts = grads["trunk"]["last_conv"].astype(jnp.float32)  # [B, h, w, K]
    weights = d_acts.mean(axis=(1, 2))  # [B, K]
    cam = jax.nn.relu(jnp.einsum("bhwk,bk->bhw", acts.astype(jnp.float32), weights))
    # Bilinear weights are >= 0, so the upsampled map stays >= 0.
    maps = jax.image.resize(cam, (x.shape[0], x.shape[1], x.shape[2]), "bilinear")
    return maps, logits


def choose_utterances(
    probs: np.ndarray, labels: np.ndarray, mask: np.ndarray, per_class: int
) -> tuple[np.ndarray, np.ndarray]:
    """The utterances Grad-CAM shows, by the module docstring's rule.

    Args:
      probs: [N, C] class probabilities (of each utterance's centre window).
      labels: [N] true class ids.
      mask: [N], > 0 where the utterance has a label.
      per_class: utterances per class (fewer where a class has fewer).

    Returns:
      (indices [K] into the N utterances, their classes [K]), class by class.
    """
    predicted = probs.argmax(-1)
    indices, classes = [], []
    for c in range(probs.shape[1]):
        rows = np.flatnonzero((mask > 0) & (labels == c))
        # np.lexsort's last key sorts first: correct ones, then p(c) falling.
        order = np.lexsort((rows, -probs[rows, c], predicted[rows] != c))
        picked = rows[order[:per_class]]
        indices.extend(picked)
        classes.extend([c] * len(picked))
    return np.array(indices, np.int64), np.array(classes, np.int64)


def label_task(tasks):
    """The task whose classes the analysis shows (or None): see the docstring."""
    return next((t for t in tasks if t.kind == tasks_lib.CLASSIFICATION), None)


def _genders(split) -> np.ndarray:
    """[N] "female"/"male" from the gender task's labels, "" where unknown."""
    if "gender" not in split.labels:
        return np.full(len(split), "")
    names = np.array(tasks_lib.GENDERS)[split.labels["gender"]]
    return np.where(split.masks["gender"] > 0, names, "")


def _gradcam_arrays(exp, state, split, task, per_class: int) -> dict:
    """The cam_* arrays: chosen utterances, their windows and maps."""
    c, data, mesh = exp.config, exp.data, exp.mesh
    eval_args = dict(
        crop=c.data.crop_frames,
        hop=c.data.eval_hop_frames,
        batch_size=c.data.eval_batch_size,
    )
    centre = evaluate.predict_split(
        exp.eval_fn, state, split, data, mesh, fixed=True, **eval_args
    )[task.name]  # [N, C]
    indices, classes = choose_utterances(
        centre, split.labels[task.name], split.masks[task.name], per_class
    )
    windows = pipeline.eval_windows(
        split, c.data.crop_frames, c.data.eval_hop_frames, fixed=True
    )[indices]  # [K, 2]: (utterance, start)
    x = batches.window_inputs(split, data, windows, c.data.crop_frames)
    mean, std = batches.band_statistics(split, data, windows[:, 0])
    maps = np.zeros(x.shape[:3], np.float32)
    if len(indices):
        # Pad the batch to a multiple of the devices it is split over.
        pad = -len(indices) % mesh.size
        batch = {
            "x": np.concatenate([x, np.zeros((pad,) + x.shape[1:], x.dtype)]),
            "c": np.concatenate([classes, np.zeros(pad, np.int64)]).astype(np.int32),
        }
        batch = sharding.from_global(batch, mesh)
        cam_fn = jax.jit(
            functools.partial(gradcam, exp.model, task=task.name),
            out_shardings=sharding.replicated(mesh),
        )
        maps = np.asarray(
            jax.device_get(
                cam_fn(state_lib.eval_variables(state), batch["x"], batch["c"])[0]
            )
        )[: len(indices)]
    predicted = centre[indices].argmax(-1)
    return {
        "cam_uid": np.array([split.uids[i] for i in indices], str),
        "cam_class": classes,
        "cam_pred": predicted,
        "cam_prob": centre[indices, predicted].astype(np.float32),
        "cam_start": windows[:, 1],
        # The window in log-mel units (dB), as it was before normalisation.
        "cam_logmel": x[..., 0] * std + mean,
        "cam_map": maps,
    }


def analyse(exp, state, split_name: str = "test") -> dict:
    """analysis.npz's arrays for a split (call on every process).

    Args:
      exp: the experiment.Experiment (config, tasks, data, mesh, model, eval_fn).
      state: the state to analyse (replicated on the mesh).
      split_name: the split.

    Returns:
      Name -> numpy array; see the module docstring.
    """
    c, split = exp.config, exp.data.splits[split_name]
    embed_fn = jax.jit(
        functools.partial(embed_step, model=exp.model),
        out_shardings=sharding.replicated(exp.mesh),
    )
    embedding = evaluate.predict_split(
        embed_fn,
        state,
        split,
        exp.data,
        exp.mesh,
        **evaluate.windowing(c.data),
    )["embedding"]
    arrays = {
        "uid": np.array(split.uids, str),
        "speaker": np.array(split.speakers, str),
        "gender": _genders(split),
        "embedding": embedding.astype(np.float32),
    }
    task = label_task(exp.tasks)
    if task is not None:
        labelled = split.masks[task.name] > 0
        arrays["task"] = np.array(task.name)
        arrays["classes"] = np.array(task.classes, str)
        arrays["label"] = np.where(labelled, split.labels[task.name], -1)
        arrays.update(
            _gradcam_arrays(exp, state, split, task, c.report.gradcam_per_class)
        )
    return arrays


def write_analysis(exp, state, workdir: str) -> "str | None":
    """Writes `<workdir>/analysis.npz` (process 0) when report.figures is on.

    Every process must call it: it runs jitted functions on the mesh. With
    report.figures off it removes an analysis.npz left by an earlier run.

    Returns:
      The file's path, or None when report.figures is off.
    """
    path = os.path.join(workdir, FILENAME)
    if not exp.config.report.figures:
        if jax.process_index() == 0 and os.path.exists(path):
            os.remove(path)
        return None
    arrays = analyse(exp, state)
    if jax.process_index() == 0:
        with open(path + ".tmp", "wb") as f:
            np.savez_compressed(f, **arrays)
        os.replace(path + ".tmp", path)
    return path


def load(path: str) -> dict:
    """analysis.npz as a dict of numpy arrays."""
    with np.load(path) as f:
        return {name: f[name] for name in f.files}
