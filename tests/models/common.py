"""Helpers shared by the tests of mtl_ser.models: heads, init and param counts."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

HEADS = (("emotion", 4), ("arousal", 1), ("gender", 2))
# Small enough for a fast CPU run, big enough to exercise every layer.
SMALL = dict(width=0.0625, hidden=256)  # hidden size round(256 / 16) = 16

# torchvision's VGG cfgs A, B, D, E, written out independently of vgg.py.
VGG_CONVS = {
    11: (64, 128, 256, 256, 512, 512, 512, 512),
    13: (64, 64, 128, 128, 256, 256, 512, 512, 512, 512),
    16: (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512),
    19: (64, 64, 128, 128, 256, 256, 256, 256, *(512,) * 8),
}
# torchvision's totals with the 1000-class classifier on 224x224x3 inputs.
TOTAL_COUNTS = {
    "alexnet": 61_100_840,
    "vgg11": 132_863_336,
    "vgg13": 133_047_848,
    "vgg16": 138_357_544,
    "vgg19": 143_667_240,
}


def init_shapes(model, shape):
    """Variable shapes of `model.init` on `shape`, without computing anything."""
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    init = functools.partial(model.init, train=False)
    return jax.eval_shape(init, {"params": jax.random.key(0)}, x)


def rng_key(seed):
    """A PRNG key whose sampler compiles much faster on CPU than threefry."""
    return jax.random.key(seed, impl="rbg")


def param_count(tree):
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree_util.tree_leaves(tree))
