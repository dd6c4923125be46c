"""stylegan-jax: StyleGAN3 ("Alias-Free Generative Adversarial Networks") in JAX/Flax."""

__version__ = "0.1.0"
