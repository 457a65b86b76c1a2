"""jaxdet: dense prediction in JAX/Flax with static shapes end to end."""

__version__ = "0.1.0"
