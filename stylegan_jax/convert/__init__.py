"""Conversion of official NVIDIA StyleGAN2/3 weights (state dicts and network pickles) into ours.

Everything that knows about official names and layouts lives in this package.
"""
