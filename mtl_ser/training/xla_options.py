"""Per-program XLA compiler options: which ops XLA CPU hands to YNNPACK.

XLA's CPU backend passes some ops to its YNNPACK library ("library fusions")
and emits the rest itself (convolutions then go to Eigen). Which is faster
depends on the op: on this project's 2-core x86 machine (jax 0.10.2) YNNPACK's
dots and reductions were the fast ones, and its convolutions with their
gradients 1.1-3.3x slower than Eigen's, layer by layer
(`python -m benchmarks.conv_layers`). So the default keeps dots and reductions
in YNNPACK and nothing else: the whole train step ran 1.1-1.6x faster than with
XLA's own choice, 1.4-1.6x at batch 64 (`python -m benchmarks.torch_reference`,
its "xla fusions" column). Other backends ignore this.

The option is experimental: another jax's XLA may not know it, and then the
compile fails. So a trivial program is compiled with it first, once per process,
and where XLA rejects it the field gives way to XLA's defaults with a warning.
"""

import functools
import sys

import jax
import jax.numpy as jnp

from mtl_ser.errors import ConfigError

# Config names -> XLA's LibraryFusionType names.
LIBRARY_FUSIONS = {
    "dot": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT",
    "reduce": "LIBRARY_FUSION_TYPE_REDUCE",
    "eltwise": "LIBRARY_FUSION_TYPE_ELTWISE",
    "conv": "LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION",
}
_OPTION = "xla_cpu_experimental_ynn_fusion_type"


def parse_library_fusions(value: str) -> tuple:
    """train.cpu_library_fusions -> its op kinds; () for "none", None for "xla".

    Raises:
      ConfigError: naming the field, for an unknown kind.
    """
    value = value.strip()
    if value == "xla":
        return None
    if value == "none":
        return ()
    kinds = tuple(k.strip() for k in value.split(","))
    unknown = [k for k in kinds if k not in LIBRARY_FUSIONS]
    if unknown or not kinds:
        raise ConfigError(
            f"train.cpu_library_fusions={value!r}: use 'xla' (XLA's default), "
            f"'none', or a comma-separated list of {sorted(LIBRARY_FUSIONS)}"
        )
    return kinds


def compiler_options(train_cfg) -> "dict | None":
    """The `jax.jit(compiler_options=...)` of the train and eval steps."""
    return compiler_options_for(train_cfg.cpu_library_fusions)


def compiler_options_for(library_fusions: str) -> "dict | None":
    """Compiler options for a cpu_library_fusions value.

    None (XLA's defaults) off the CPU backend, with "xla", or where this XLA
    rejects the option (one warning line on stderr, then None).
    """
    kinds = parse_library_fusions(library_fusions)
    if kinds is None or jax.default_backend() != "cpu":
        return None
    value = ",".join(LIBRARY_FUSIONS[k] for k in kinds)
    return {_OPTION: value} if _xla_accepts(_OPTION, value) else None


@functools.cache
def _xla_accepts(option: str, value: str) -> bool:
    """Whether XLA compiles a program with `option=value`; warns once if not.

    Lowered from an abstract value and not run: no transfer, so it works under
    the loop's transfer guard.
    """
    try:
        jax.jit(lambda x: x + 1, compiler_options={option: value}).lower(
            jax.ShapeDtypeStruct((), jnp.float32)
        ).compile()
    except jax.errors.JaxRuntimeError as e:
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        print(
            "Warning: train.cpu_library_fusions ignored, XLA's defaults used: "
            f"the XLA of jax {jax.__version__} says {reason}",
            file=sys.stderr,
            flush=True,
        )
        return False
    return True
