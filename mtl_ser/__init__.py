"""mtl_ser: multitask speech emotion recognition in JAX/Flax."""

__all__ = ["Predictor"]


def __getattr__(name):
    # `from mtl_ser import Predictor` without importing JAX for every submodule.
    if name == "Predictor":
        from mtl_ser.outputs.predict import Predictor

        return Predictor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
