"""What every evaluation shares: labelled images, pooled features of a source, top-k accuracy,
and the encoder to evaluate (a run, a checkpoint, a weights file or a timm name)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from ..data.images import BadImageError, load_decodable, log_bad_image
from ..data.workers import WorkerLoader
from ..distributed import concat_all_gather, rank, world_size
from ..errors import UserError, UserFileNotFoundError
from ..export.checkpoints import encoder_facts, find_checkpoint_file, load_encoder
from ..hubcache import cache_message, hub_or_cache_for, not_cached

logger = logging.getLogger(__name__)


class LeftOut(NamedTuple):
    """An image of an evaluation that could not be decoded."""

    image_id: str
    reason: str
    index: int


def count_left_out(left_out: list[LeftOut]) -> int:
    """Name each image of a batch left out (once per process), and count them."""
    for item in left_out:
        log_bad_image(item.image_id, item.reason, f" (index {item.index})")
    return len(left_out)


class LabelledImages(Dataset):
    """``(transform(image), label)`` pairs of a source, for feature extraction and probing.

    An image the source cannot decode (:class:`~regioncl.data.images.BadImageError`) is
    named in the log. For evaluation (the default) it comes back as a :class:`LeftOut`, which
    :func:`collate_skipping` leaves out of the batch and the process that reads the batches names
    (once: a loader's workers start afresh at each pass of the kNN monitor); for training
    (``substitute_bad``) the next decodable image takes its place, so batches keep their
    size (every process then runs the same steps, and mixup keeps its even batches).
    """

    def __init__(self, source: Any, transform: Any, substitute_bad: bool = False) -> None:
        self.source, self.transform, self.substitute_bad = source, transform, substitute_bad

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | LeftOut:
        if self.substitute_bad:
            image, label, _, _ = load_decodable(self.source, index)
            return self.transform(image), label
        try:
            image, label = self.source[index]
        except BadImageError as err:
            return LeftOut(err.image_id, err.reason, index)
        return self.transform(image), label


def collate_skipping(
    items: list[tuple[torch.Tensor, int] | LeftOut],
) -> tuple[torch.Tensor | None, torch.Tensor, list[LeftOut]]:
    """``(images, labels, left_out)``: the batch of the decodable items and those left out
    (``images`` is ``None`` when none was decodable)."""
    good = [item for item in items if not isinstance(item, LeftOut)]
    labels = torch.tensor([label for _, label in good], dtype=torch.long)
    left_out = [item for item in items if isinstance(item, LeftOut)]
    return (torch.stack([x for x, _ in good]) if good else None), labels, left_out


def feature_map(encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``(B, C, G, G)`` from a regioncl :class:`~regioncl.backbones.Encoder` or any timm model."""
    forward_features = getattr(encoder, "forward_features", None)
    return forward_features(images) if forward_features is not None else encoder(images)


#: what every command that takes an encoder says of ENCODER
ENCODER_FORMS = "a run folder, a checkpoint folder, an export folder, a weights file, or a timm local-dir:/hf-hub: name"


def create_timm_model(spec: str, num_classes: int) -> nn.Module:
    """``timm.create_model(spec, pretrained=True)`` for a ``local-dir:``/``hf-hub:`` name, its
    failures (not in the cache, no such repository, weights that do not fit) one :class:`UserError`.
    Where the Hub cannot be reached, an ``hf-hub:`` name is read from the Hugging Face cache alone."""
    import timm

    if spec.startswith("local-dir:") and not (Path(spec[len("local-dir:") :]) / "config.json").is_file():
        raise UserFileNotFoundError(f"{spec}: no config.json in that folder (an export of `regioncl export`?)")
    with hub_or_cache_for(spec) as cache_only:
        try:
            return timm.create_model(spec, pretrained=True, num_classes=num_classes)
        except (OSError, RuntimeError, ValueError) as e:  # huggingface_hub's (a malformed id too) and timm's
            if cache_only and not_cached(e):
                raise UserError(f"cannot load {spec}: {cache_message(spec[len('hf-hub:') :], cache_only)}") from e
            raise UserError(f"cannot load {spec} with timm: {str(e).splitlines()[0]}") from e


def load_eval_encoder(spec: str) -> nn.Module:
    """A frozen encoder to evaluate: a timm ``local-dir:``/``hf-hub:`` name, or anything
    :func:`regioncl.export.hub.export` accepts (a run folder, a checkpoint folder, a weights file).
    Its ``regioncl_image_size`` is the input size it was trained at, where its configuration says."""
    if not spec.startswith(("local-dir:", "hf-hub:")):
        return load_encoder(spec)[0]
    model = create_timm_model(spec, num_classes=0)
    size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size")
    model.regioncl_image_size = int(size[-1]) if size else None
    return model


def eval_image_size(encoder: nn.Module, requested: int | None = None) -> int:
    """The input size to evaluate ``encoder`` at: ``requested``, else the size it was trained at
    (:func:`load_eval_encoder` records it), else 224."""
    return int(requested or getattr(encoder, "regioncl_image_size", None) or 224)


def trained_image_size(spec: str) -> int | None:
    """The input size the encoder ``spec`` (see :func:`load_eval_encoder`) was trained at, read from
    its configuration without its weights; None where nothing says."""
    try:
        if spec.startswith("local-dir:"):
            config = json.loads((Path(spec[len("local-dir:") :]) / "config.json").read_text())
        elif spec.startswith("hf-hub:"):
            from huggingface_hub import hf_hub_download

            with hub_or_cache_for(spec):
                config = json.loads(Path(hf_hub_download(spec[len("hf-hub:") :], "config.json")).read_text())
        else:
            config = find_checkpoint_file(spec)[1]
    except Exception:  # unreadable or absent: loading the encoder says what is wrong, in its words
        return None
    return encoder_facts(config)[2]


def _share_loader(source: Any, transform: Any, batch_size: int, num_workers: int) -> DataLoader:
    """Batches (:func:`collate_skipping`) of this process's share: every world-th image of ``source``."""
    images = LabelledImages(source, transform)
    world = world_size()
    mine = Subset(images, range(rank(), len(images), world)) if world > 1 else images
    return WorkerLoader(
        mine,
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_skipping,
        pin_memory=torch.cuda.is_available(),
    )


def _report_bad(bad: int, total: int, device: torch.device) -> None:
    """Log the images left out (summed over processes); none decodable at all is an error."""
    if world_size() > 1:
        bad = int(concat_all_gather(torch.tensor([bad], device=device)).sum())
    if bad and rank() == 0:
        logger.warning("%d of %d images could not be decoded and were left out", bad, total)
    if total and bad == total:
        raise UserError(f"none of the {total} images could be decoded")


def encode_source(
    encoder: nn.Module,
    source: Any,
    transform: Any,
    device: torch.device,
    *,
    batch_size: int = 256,
    num_workers: int = 0,
    channels_last: bool = False,
    normalize: bool = True,
    gather: bool = True,
    on_device: bool = False,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features ``(N, C)`` (in ``dtype``) and labels ``(N,)`` of every decodable image of
    ``source``, on the CPU, or on ``device`` with ``on_device``.

    Each process encodes every world-th image. With ``gather`` every process then gets all
    the rows (in rank order); without, it keeps its own share. Undecodable images are
    left out; their number, summed over the processes, is logged.
    """
    loader = _share_loader(source, transform, batch_size, num_workers)
    x, y, bad = extract_features(
        encoder, loader, device, channels_last, normalize=normalize, on_device=on_device, dtype=dtype
    )
    _report_bad(bad, len(source), device)
    return (gather_rows(x, device, on_device), gather_rows(y, device, on_device)) if gather else (x, y)


@torch.no_grad()
def topk_accuracy(
    predict: Callable[[torch.Tensor], torch.Tensor],
    source: Any,
    transform: Any,
    device: torch.device,
    *,
    batch_size: int = 256,
    num_workers: int = 0,
) -> tuple[float, float | None]:
    """Top-1 and top-5 accuracy of ``predict(images) -> logits`` on the decodable images of ``source``;
    top-5 is None with five classes or fewer (it would be 100 % or close, whatever the encoder).

    Each process scores every world-th image and the counts are summed, so every image
    counts exactly once however many processes there are (no padding duplicates).
    ``predict`` must not communicate across processes (pass an unwrapped model, not DDP):
    the processes' shares may differ by one batch.
    """
    counts, bad, classes = torch.zeros(3, dtype=torch.float64), 0, 0
    for images, labels, left_out in _share_loader(source, transform, batch_size, num_workers):
        bad += count_left_out(left_out)
        if images is None:
            continue
        logits = predict(images.to(device, non_blocking=True)).float().cpu()
        classes = logits.shape[1]
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        counts += torch.tensor(
            [(top[:, 0] == labels).sum(), (top == labels[:, None]).any(1).sum(), len(labels)], dtype=torch.float64
        )
    _report_bad(bad, len(source), device)
    if world_size() > 1:
        counts = concat_all_gather(counts.to(device)[None]).sum(0).cpu()
    return float(counts[0] / counts[2]), (float(counts[1] / counts[2]) if classes > 5 else None)


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    batches: Iterable[tuple[torch.Tensor | None, torch.Tensor, list[LeftOut]]],
    device: torch.device,
    channels_last: bool = False,
    normalize: bool = True,
    on_device: bool = False,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Globally pooled backbone features ``(N, C)`` (L2-normalised unless ``normalize`` is
    False, in ``dtype``) and labels ``(N,)``, on CPU (or left on ``device`` with ``on_device``),
    and the number of images left out, from batches of :func:`collate_skipping`.

    The encoder is put in eval mode for the pass and restored afterwards.
    """
    was_training = encoder.training
    encoder.eval()
    feats, labels, bad = [], [], 0
    try:
        for images, target, left_out in batches:
            bad += count_left_out(left_out)
            if images is None:
                continue
            images = images.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            pooled = feature_map(encoder, images).float().mean((2, 3))
            rows = (F.normalize(pooled, dim=1) if normalize else pooled).to(dtype)
            feats.append(rows if on_device else rows.cpu())
            labels.append(target.to(device) if on_device else target.cpu())
    finally:
        encoder.train(was_training)
    if not feats:  # this process had no decodable image (or none at all): an empty (0, C) block
        where = device if on_device else "cpu"
        return (
            torch.zeros(0, int(getattr(encoder, "num_features", 0)), dtype=dtype, device=where),
            torch.zeros(0, dtype=torch.long, device=where),
            bad,
        )
    return torch.cat(feats), torch.cat(labels), bad


def gather_rows(t: torch.Tensor, device: torch.device, on_device: bool = False) -> torch.Tensor:
    """Concatenate ``t`` ``(N_r, ...)`` from every process (N_r may differ), on the CPU (or on ``device``)."""
    if world_size() == 1:
        return t
    local = t.to(device)
    sizes = concat_all_gather(torch.tensor([t.shape[0]], device=device)).tolist()
    padded = torch.zeros((max(sizes), *t.shape[1:]), dtype=t.dtype, device=device)
    padded[: t.shape[0]] = local
    parts = concat_all_gather(padded).view(len(sizes), max(sizes), *t.shape[1:])
    rows = torch.cat([parts[i, :n] for i, n in enumerate(sizes)])
    return rows if on_device else rows.cpu()
