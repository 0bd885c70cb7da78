"""analysis.npz: Grad-CAM against a hand computation, embeddings, the choice rule."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mtl_ser import models
from mtl_ser.data import pipeline
from mtl_ser.models import layers
from mtl_ser.training import analysis, experiment

HEADS = (("emotion", 4), ("gender", 2))


def _tail(model, params, acts, pool):
    """The network after the last conv layer, rebuilt from its layers.

    acts [B, h, w, K] -> emotion logits [B, 4]: max pool, adaptive average
    pool, the trunk's classifier and the emotion head.
    """
    trunk = model.trunk
    x = layers.max_pool(acts, *pool)
    x = layers.adaptive_avg_pool(x, trunk.pool_size)
    classifier = layers.Classifier(
        layers.scaled(trunk.hidden, trunk.width), trunk.dropout
    )
    embedding = classifier.apply(
        {"params": params["trunk"]["classifier"]}, x, train=False
    )
    head = params["head_emotion"]
    return embedding @ head["kernel"] + head["bias"]


def _he_scaled(params):
    """Params with each Dense kernel rescaled to std sqrt(2 / fan in).

    The initial heads (and VGG's classifier) have std 0.01: scores would move
    too little for float32 finite differences.
    """

    def rescale(path, leaf):
        names = [str(getattr(p, "key", p)) for p in path]
        if names[-1] != "kernel" or not ("classifier" in names or names[0] != "trunk"):
            return leaf
        return leaf * np.sqrt(2.0 / leaf.shape[0]) / jnp.std(leaf)

    return jax.tree_util.tree_map_with_path(rescale, params)


@pytest.mark.parametrize(
    "name, batch_norm, last, pool",
    [("alexnet", False, "conv5", (3, 2)), ("vgg11", True, "bn8", (2, 2))],
)
def test_gradcam_equals_a_hand_computation(name, batch_norm, last, pool):
    model = models.make_model(
        name, HEADS, width=1 / 16, hidden=64, dropout=0.5, batch_norm=batch_norm
    )
    x = jax.random.normal(jax.random.key(1), (2, 64, 64, 1))
    variables = model.init(jax.random.key(0), x, train=False)
    variables["params"] = _he_scaled(variables["params"])
    if batch_norm:  # Running statistics of this batch (init's are 0 and 1).
        _, updates = model.apply(
            variables,
            x,
            train=True,
            rngs={"dropout": jax.random.key(2)},
            mutable=["batch_stats"],
        )
        # BatchNorm's momentum is 0.9: new = 0.9 * initial + 0.1 * batch.
        variables["batch_stats"] = jax.tree_util.tree_map_with_path(
            lambda path, s: (s - 0.9 * (path[-1].key == "var")) / 0.1,
            updates["batch_stats"],
        )
    classes = jnp.array([2, 0])
    maps, logits = analysis.gradcam(model, variables, x, classes, task="emotion")

    # The last conv layer's activations, captured at its (BatchNorm or conv)
    # module's output and passed through the ReLU by hand.
    (outputs, _), captured = model.apply(
        variables,
        x,
        train=False,
        capture_intermediates=lambda mdl, _: mdl.name == last,
        mutable=["intermediates"],
    )
    acts = jax.nn.relu(captured["intermediates"]["trunk"][last]["__call__"][0])
    params = variables["params"]
    tail = _tail(model, params, acts, pool)
    np.testing.assert_allclose(tail, outputs["emotion"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logits, outputs["emotion"], rtol=1e-5, atol=1e-6)

    # Each Grad-CAM weight is the spatial mean of d score / d A_k, i.e. the
    # change of the score when channel k rises by 1 everywhere, over h * w:
    # central finite differences through the rebuilt tail.
    height, width, channels = acts.shape[1:]
    eps = 1e-2
    weights = np.zeros((2, channels))
    tail_of = jax.jit(lambda a: _tail(model, params, a, pool))
    for k in range(channels):
        step = jnp.zeros(channels).at[k].set(eps)
        up, down = tail_of(acts + step), tail_of(acts - step)
        delta = (up - down)[jnp.arange(2), classes] / (2 * eps)
        weights[:, k] = delta / (height * width)
    cam = np.maximum(np.einsum("bhwk,bk->bhw", acts, weights), 0.0)
    assert cam.max() > 0
    expected = jax.image.resize(cam, (2, 64, 64), "bilinear")

    assert maps.shape == (2, 64, 64)  # The input's time x mel.
    assert float(maps.min()) >= 0.0
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(maps, expected, atol=1e-3 * scale)


def test_the_hook_changes_no_output_and_init_has_no_extra_collections():
    model = models.make_model("alexnet", HEADS, width=1 / 16, hidden=64)
    x = jax.random.normal(jax.random.key(1), (2, 64, 64, 1))
    variables = model.init(jax.random.key(0), x, train=False)
    assert set(variables) == {"params"}
    plain = model.apply(variables, x, train=False)
    acts_shape = (2, 3, 3, 16)  # conv5 of a 64 x 64 input, 256 / 16 channels.
    perturbed, updates = model.apply(
        {**variables, "perturbations": {"trunk": {"last_conv": jnp.zeros(acts_shape)}}},
        x,
        train=False,
        mutable=["intermediates"],
    )
    jax.tree.map(np.testing.assert_array_equal, plain, perturbed)
    assert updates["intermediates"]["trunk"]["last_conv"][0].shape == acts_shape


def test_choose_utterances_prefers_confident_correct_ones():
    probs = np.array(
        [
            [0.6, 0.3, 0.1],  # 0: class 0, correct
            [0.9, 0.05, 0.05],  # 1: class 0, correct, most confident
            [0.5, 0.4, 0.1],  # 2: class 1, wrong (predicted 0)
            [0.1, 0.45, 0.45],  # 3: class 1, a tie: argmax says 1, correct
            [0.2, 0.7, 0.1],  # 4: class 1, unlabelled
            [0.6, 0.2, 0.2],  # 5: class 2, wrong
            [0.5, 0.1, 0.4],  # 6: class 2, wrong but the highest p(2)
        ]
    )
    labels = np.array([0, 0, 1, 1, 1, 2, 2])
    mask = np.array([1, 1, 1, 1, 0, 1, 1])
    indices, classes = analysis.choose_utterances(probs, labels, mask, per_class=1)
    assert indices.tolist() == [1, 3, 6]
    assert classes.tolist() == [0, 1, 2]
    indices, classes = analysis.choose_utterances(probs, labels, mask, per_class=2)
    # Correct ones first, then the others by p(class).
    assert indices.tolist() == [1, 0, 3, 2, 6, 5]
    assert classes.tolist() == [0, 0, 1, 1, 2, 2]


def test_analysis_of_the_test_split(smoke_config):
    c = smoke_config
    exp = experiment.Experiment(c, verbose=False)
    arrays = analysis.analyse(exp, exp.state)
    split = exp.data.splits["test"]
    assert arrays["uid"].tolist() == list(split.uids)
    assert arrays["speaker"].tolist() == list(split.speakers)
    assert set(arrays["gender"]) == {"female", "male"}
    np.testing.assert_array_equal(arrays["label"], split.labels["emotion"])

    # The embeddings: model.embed on the evaluation windows, averaged.
    windows = pipeline.eval_windows(split, c.data.crop_frames, c.data.eval_hop_frames)
    x = np.stack(
        [
            (split.store.get(split.rows[i])[s : s + c.data.crop_frames] - exp.data.mean)
            / exp.data.std
            for i, s in windows
        ]
    )[..., None]
    variables = {"params": jax.device_get(exp.state.params["model"])}
    embedded = np.asarray(exp.model.apply(variables, x, train=False, method="embed"))
    expected = np.stack(
        [embedded[windows[:, 0] == i].mean(0) for i in range(len(split))]
    )
    np.testing.assert_allclose(arrays["embedding"], expected, rtol=1e-4, atol=1e-6)

    # Grad-CAM: one utterance per class, its centre window in dB.
    assert arrays["cam_class"].tolist() == [0, 1, 2, 3]
    assert arrays["cam_map"].shape == (4, c.data.crop_frames, c.features.n_mels)
    assert (arrays["cam_map"] >= 0).all()
    for k, uid in enumerate(arrays["cam_uid"]):
        i = split.uids.index(uid)
        assert split.labels["emotion"][i] == arrays["cam_class"][k]
        features = split.store.get(split.rows[i])
        start = max(len(features) - c.data.crop_frames, 0) // 2
        assert arrays["cam_start"][k] == start
        window = features[start : start + c.data.crop_frames]
        np.testing.assert_allclose(
            arrays["cam_logmel"][k, : len(window)], window, atol=1e-3
        )


def test_figures_off_writes_nothing_and_removes_an_old_file(smoke_config, tmp_path):
    smoke_config.report.figures = False
    (tmp_path / analysis.FILENAME).write_bytes(b"old")
    exp = types.SimpleNamespace(config=smoke_config)  # Nothing else is read.
    assert analysis.write_analysis(exp, None, str(tmp_path)) is None
    assert not (tmp_path / analysis.FILENAME).exists()
