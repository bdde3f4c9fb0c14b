"""Embeddings out: the pooled, L2-normalised features of every image of a source, as Parquet.

Rows: ``index`` (the image's position in the source, or in its reader's part of a stream),
``id`` (its path, dataset key or name), ``label`` (null without one), ``class`` (the label's name:
the class folder, the dataset's class name; null without one) and ``embedding`` (``dim`` float32,
unit norm). The file's metadata holds the class names in label order (``regioncl.classes``, JSON).
The work is cut into chunks of images; each chunk is written as a Parquet file of its own under
``OUTPUT.parts/`` (atomically), so a killed run, started again, skips the chunks it already
wrote; at the end the parts are joined into ``OUTPUT`` one row group
at a time (memory stays that of a chunk) and removed. Under ``accelerate launch`` process r
embeds its own contiguous share of the images (of a stream: its own shards), and the parts are
joined in rank order: a map-style source gives the same file, row for row, for any number of
processes. Parts left by a job with another number of processes, chunk size or source are
discarded, not mixed in.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..data.images import BadImageError
from ..data.workers import WorkerLoader
from ..distributed import progress_bar
from ..errors import UserError
from ..files import atomic_write
from .features import feature_map

logger = logging.getLogger("regioncl")


def image_id(source: Any, index: int) -> str:
    """What names image ``index`` of ``source``: a folder's relative path, a dataset's key, the sample set's name."""
    path = getattr(source, "path", None)
    if callable(path):  # an image folder
        return str(path(index))
    if isinstance(path, str):  # a Hugging Face dataset
        return f"{path}[{source.split}][{index}]"
    return f"{type(source).__name__}:{getattr(source, 'split', '')}:{index}"


class _Indexed(Dataset):
    """``(image tensor, label, index)``, or ``None`` for an image that cannot be decoded."""

    def __init__(self, source: Any, transform: Any, indices: range) -> None:
        self.source, self.transform, self.indices = source, transform, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int] | None:
        index = self.indices[i]
        try:
            image, label = self.source[index]
        except BadImageError as err:
            logger.warning("left out bad image %s (index %d): %s", err.image_id, index, err.reason)
            return None
        return self.transform(image), label, index


def _collate(items: list) -> tuple[torch.Tensor, list[int], list[int]] | None:
    good = [item for item in items if item is not None]
    if not good:
        return None
    return torch.stack([x for x, _, _ in good]), [label for _, label, _ in good], [index for _, _, index in good]


def _stream_items(source: Any, transform: Any, reader: int, readers: int, skip: int) -> Iterator:
    """This reader's part of a stream, in its stored order, after its first ``skip`` examples."""
    for position, (key, raw, label) in enumerate(source.iterate(0, 0, 0, decode=False, shard=(reader, readers))):
        if position < skip:
            continue
        try:
            yield transform(source.decode(raw, key)), label, position, key
        except BadImageError as err:
            logger.warning("left out bad image %s: %s", err.image_id, err.reason)


def _write_part(
    path: Path, ids: list[str], indices: list[int], labels: list[int], vectors: torch.Tensor, classes: list[str]
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    dim = vectors.shape[1]
    table = pa.table(
        {
            "index": pa.array(indices, pa.int64()),
            "id": pa.array(ids, pa.string()),
            "label": pa.array([label if label >= 0 else None for label in labels], pa.int64()),
            "class": pa.array([classes[label] if 0 <= label < len(classes) else None for label in labels], pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.numpy().reshape(-1), pa.float32()), dim),
        }
    )
    table = table.replace_schema_metadata({"regioncl.classes": json.dumps(classes)})
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


@torch.no_grad()
def _encode(encoder: nn.Module, images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    images = images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return F.normalize(feature_map(encoder, images).float().mean((2, 3)), dim=1).cpu()


def embed(
    encoder: nn.Module,
    source: Any,
    transform: Any,
    output: str | os.PathLike,
    accelerator: Any,
    *,
    batch_size: int = 256,
    chunk_size: int = 4096,
    num_workers: int = 0,
    channels_last: bool = False,
) -> Path:
    """Write the embeddings of every decodable image of ``source`` to ``output`` (Parquet); see
    the module docstring. Every process must call it; returns the output path."""
    output = Path(output)
    parts = output.with_name(output.name + ".parts")
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    # The parts are this exact job's: another split (processes, chunk size) or source starts over.
    job = {
        "schema": 2,
        "processes": world,
        "chunk_size": chunk_size,
        "source": repr(getattr(source, "path", source)),
        "images": None if getattr(source, "is_streaming", False) else len(source),
    }
    if accelerator.is_main_process:
        written = parts / "job.json"
        if parts.is_dir() and (not written.is_file() or json.loads(written.read_text()) != job):
            logger.warning("%s holds parts of another embedding job: starting over", parts)
            shutil.rmtree(parts)
        parts.mkdir(parents=True, exist_ok=True)
        written.write_text(json.dumps(job))
    accelerator.wait_for_everyone()
    encoder = encoder.to(device).eval()
    if channels_last:
        encoder = encoder.to(memory_format=torch.channels_last)
    streaming = bool(getattr(source, "is_streaming", False))
    classes = [str(c) for c in getattr(source, "classes", None) or []]
    if streaming:
        _embed_stream(encoder, source, transform, parts, accelerator, batch_size, chunk_size, channels_last, classes)
    else:
        n = len(source)
        share = range(rank * n // world, (rank + 1) * n // world)  # contiguous: rank order is index order
        chunks = [share[i : i + chunk_size] for i in range(0, len(share), chunk_size)]
        bar = progress_bar(accelerator, total=len(chunks), desc="embed", unit="chunk")
        for c, indices in enumerate(chunks):
            part = parts / f"rank{rank:05d}-{c:07d}.parquet"
            if not part.is_file():  # written by an earlier, killed run: kept
                _embed_chunk(
                    encoder, source, transform, indices, part, device, batch_size, num_workers, channels_last, classes
                )
            bar.update(1)
        bar.close()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        _join(sorted(parts.glob("rank*.parquet")), output)
        shutil.rmtree(parts)
    accelerator.wait_for_everyone()
    return output


def _embed_chunk(
    encoder: nn.Module,
    source: Any,
    transform: Any,
    indices: range,
    part: Path,
    device: torch.device,
    batch_size: int,
    num_workers: int,
    channels_last: bool,
    classes: list[str],
) -> None:
    loader = WorkerLoader(
        _Indexed(source, transform, indices), batch_size=batch_size, num_workers=num_workers, collate_fn=_collate
    )
    ids, kept, labels, vectors = [], [], [], []
    for batch in loader:
        if batch is None:
            continue
        images, batch_labels, batch_indices = batch
        vectors.append(_encode(encoder, images, device, channels_last))
        kept += batch_indices
        labels += batch_labels
        ids += [image_id(source, i) for i in batch_indices]
    if vectors:
        _write_part(part, ids, kept, labels, torch.cat(vectors), classes)
    else:  # a chunk of undecodable images only: an empty part marks it done
        _write_part(part, [], [], [], torch.zeros(0, 1), classes)


def _embed_stream(
    encoder: nn.Module,
    source: Any,
    transform: Any,
    parts: Path,
    accelerator: Any,
    batch_size: int,
    chunk_size: int,
    channels_last: bool,
    classes: list[str],
) -> None:
    import pyarrow.parquet as pq

    rank, world = accelerator.process_index, accelerator.num_processes
    if source.num_shards < world:
        raise UserError(f"the stream has {source.num_shards} shard(s), fewer than the {world} processes")
    done = sorted(parts.glob(f"rank{rank:05d}-*.parquet"))
    # A restarted run continues after the last example of the parts it already wrote.
    skip = (
        max((max(pq.read_table(p, columns=["index"])["index"].to_pylist(), default=-1) for p in done), default=-1) + 1
    )
    items = _stream_items(source, transform, rank, world, skip)
    bar = progress_bar(accelerator, desc="embed", unit="image", initial=skip)
    c = len(done)
    while True:
        rows = [item for _, item in zip(range(chunk_size), items)]
        if not rows:
            break
        vectors = torch.cat(
            [
                _encode(
                    encoder,
                    torch.stack([x for x, _, _, _ in rows[i : i + batch_size]]),
                    accelerator.device,
                    channels_last,
                )
                for i in range(0, len(rows), batch_size)
            ]
        )
        _write_part(
            parts / f"rank{rank:05d}-{c:07d}.parquet",
            [k for _, _, _, k in rows],
            [p for _, _, p, _ in rows],
            [label for _, label, _, _ in rows],
            vectors,
            classes,
        )
        bar.update(len(rows))
        c += 1
    bar.close()


def _join(parts: list[Path], output: Path) -> None:
    """The parts, in order, as one Parquet file (one row group per non-empty part), written atomically."""
    import pyarrow.parquet as pq

    tables = (pq.read_table(p) for p in parts)
    writer = None
    tmp = output.with_name(output.name + ".tmp")
    try:
        for table in tables:
            if table.num_rows == 0:
                continue
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise UserError("no image of the source could be decoded: nothing to write")
    os.replace(tmp, output)
