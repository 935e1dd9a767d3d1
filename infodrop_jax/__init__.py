"""infodrop-jax: Information Dropout, Echo noise and information-plane analysis in JAX/Flax."""

__version__ = "0.1.0"
