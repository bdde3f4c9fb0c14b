"""Write the pooled, L2-normalised features of every image of a source as Parquet.

    regioncl embed runs/mine --data /data/my_images --output embeddings.parquet
    accelerate launch -m regioncl embed hf-hub:ORG/regioncl_m_r50 --data /data/val --output val.parquet
    regioncl plot --embeddings embeddings.parquet --out map.png          # a 2-D map, coloured by class

ENCODER is a run folder, a checkpoint folder, an export folder, a weights file, or a timm
`local-dir:`/`hf-hub:` name. Images are embedded at the size the encoder was trained at unless
--image_size says otherwise. Rows: index, id (path or key), label, class (its name), embedding.
Chunks are written as they are done, so a killed run started again continues; under
`accelerate launch` the processes split the images.
"""

from __future__ import annotations

from pathlib import Path

from .common import parser


def main(argv: list[str] | None = None, prog: str | None = None) -> str:
    p = parser(__doc__, prog)
    p.add_argument("encoder")
    p.add_argument("--data", required=True, help='"sample", a folder, or hf:ID[:SPLIT]')
    p.add_argument("--split", default="train")
    p.add_argument("--streaming", action="store_true", help="stream an hf: source instead of loading it")
    p.add_argument("--output", required=True, help="the Parquet file to write")
    p.add_argument("--overwrite", action="store_true", help="replace --output if it exists")
    p.add_argument("--image_size", type=int, help="input size (default: the size the encoder was trained at, else 224)")
    p.add_argument("--crop_pct", type=float, help="eval crop (default: 1.0 for the sample set, else 0.875)")
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--chunk_size", type=int, default=4096, help="images per part written (and per restart point)")
    p.add_argument("--num_workers", type=int, default=0)
    a = p.parse_args(argv)
    if Path(a.output).exists() and not a.overwrite:
        p.error(f"{a.output} exists: give another --output, or --overwrite to replace it")

    from ..data import build_source, eval_transform
    from ..distributed import make_accelerator
    from ..eval.embed import embed
    from ..eval.features import load_eval_encoder, trained_image_size

    size = a.image_size or trained_image_size(a.encoder) or 224
    source = build_source(a.data, a.split, image_size=size, streaming=a.streaming)
    transform = eval_transform(size, crop_pct=a.crop_pct or (1.0 if a.data == "sample" else 0.875))
    accelerator = make_accelerator()
    out = embed(
        load_eval_encoder(a.encoder),
        source,
        transform,
        a.output,
        accelerator,
        batch_size=a.batch_size,
        chunk_size=a.chunk_size,
        num_workers=a.num_workers,
    )
    if accelerator.is_main_process:
        print(out)
    accelerator.end_training()
    return str(out)
