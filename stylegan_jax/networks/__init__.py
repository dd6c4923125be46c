"""Flax linen networks: mapping, StyleGAN3 synthesis, discriminator."""
