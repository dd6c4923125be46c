"""Deployment-facing APIs: inference post-processing (denormalization, provenance watermarking)."""
