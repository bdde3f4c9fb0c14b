"""Data pipeline: image sources, MoCo v2 augmentation and two-view datasets.

Modules: ``images`` (decoding, bad images), ``folder``, ``hf`` and ``sample`` (the sources),
``sources`` (a source from a spec string), ``views`` (the MoCo v2 two-view augmentation),
``transforms`` (evaluation transforms), ``twoview`` (the datasets and the epoch sampler), ``idx``.

Typical use::

    source = build_source("sample", "train", image_size=64)
    dataset = TwoViewDataset(source, MoCoV2Views(64), seed=0)  # uint8 views: normalize() them
    sampler = EpochSampler(len(dataset), seed=0)
    sampler.set_epoch(epoch)
    loader = WorkerLoader(dataset, batch_size=256, sampler=sampler, num_workers=4)  # regioncl.data.workers
"""

from __future__ import annotations

from .folder import ImageFolderSource
from .hf import HFSource
from .images import IMAGE_EXTENSIONS, BadImageError, load_rgb, to_rgb
from .sample import SHAPE_CLASSES, SampleShapes, shape_mask
from .sources import build_source
from .transforms import IMAGENET_MEAN, IMAGENET_STD, blur_kernel_size, eval_transform
from .twoview import EpochSampler, StreamingTwoViewDataset, TwoViewDataset
from .views import BatchedMoCoV2, MoCoV2Views, normalize

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "SHAPE_CLASSES",
    "BadImageError",
    "BatchedMoCoV2",
    "EpochSampler",
    "MoCoV2Views",
    "HFSource",
    "ImageFolderSource",
    "SampleShapes",
    "StreamingTwoViewDataset",
    "TwoViewDataset",
    "blur_kernel_size",
    "build_source",
    "eval_transform",
    "load_rgb",
    "normalize",
    "shape_mask",
    "to_rgb",
]
