"""Training data: sources (synthetic shapes, image folders/zips, TFDS) and the resumable Grain input pipeline.

Typical use::

    pipeline = make_dataset(config.data, sharding=NamedSharding(mesh, P("data")), state=saved_state)
    for step in range(...):
        images, labels = next(pipeline)   # float32 [B, C, H, W] in [-1, 1], float32 [B, c_dim]
        ...
        checkpoint["data_state"] = pipeline.state()

``TfdsSource`` is imported lazily (``stylegan_jax.data.tfds_source``) so tensorflow-datasets stays optional.
"""

from stylegan_jax.data.base import DatasetError, ImageSource, prepare_image
from stylegan_jax.data.folder import ImageFolderSource, validate_dataset
from stylegan_jax.data.input_pipeline import (
    DEFAULTS,
    Batch,
    DataPipeline,
    DatasetInfo,
    ExampleSource,
    GlobalBatchSampler,
    ToModelInputs,
    XFlip,
    default_config,
    make_dataset,
    make_source,
    ordered_batches,
    resolve_config,
    to_model_images,
)
from stylegan_jax.data.synthetic import CLASS_NAMES, SyntheticShapes, render_shape

__all__ = [
    "CLASS_NAMES",
    "DEFAULTS",
    "Batch",
    "DataPipeline",
    "DatasetError",
    "DatasetInfo",
    "ExampleSource",
    "GlobalBatchSampler",
    "ImageFolderSource",
    "ImageSource",
    "SyntheticShapes",
    "ToModelInputs",
    "XFlip",
    "default_config",
    "make_dataset",
    "make_source",
    "ordered_batches",
    "prepare_image",
    "render_shape",
    "resolve_config",
    "to_model_images",
    "validate_dataset",
]
