"""mtl_ser: multitask speech emotion recognition in JAX/Flax."""
