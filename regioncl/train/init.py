"""Starting a run from pretrained encoder weights (``model.init``) instead of a random init.

The most common use of self-supervised pretraining today is to continue from an existing
encoder on one's own images. ``model.init`` names the weights in any form the evaluation
commands accept (a run, checkpoint or export folder, a weights file, ``local-dir:``,
``hf-hub:``), or ``timm`` / ``timm:TAG`` for timm's own pretrained weights of the backbone
(through the Hugging Face cache, which serves them alone where the Hub cannot be reached).
They are loaded into the online encoder, and copied into the key encoder where the method has
one, at step 0 only: a resumed run takes its weights from its checkpoint.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError, UserFileNotFoundError
from ..export.checkpoints import INIT_ONLY_ARGS, load_fitting
from ..hubcache import cache_message, hub_or_cache, not_cached
from ..methods import SSLMethod

logger = logging.getLogger("regioncl")


def _timm_weights(spec: str, encoder: Any) -> tuple[dict[str, torch.Tensor], str]:
    """timm's pretrained weights for ``encoder``'s architecture: ``timm`` (its default tag) or
    ``timm:TAG`` / ``timm:ARCH.TAG``; and the name they were found under."""
    import timm

    arch = encoder.spec.architecture
    tag = spec.partition(":")[2]
    name = tag if "." in tag else f"{arch}.{tag}" if tag else arch
    if name.split(".")[0] != arch:
        raise UserError(f"model.init {spec}: weights of {name.split('.')[0]}, but the backbone is {arch}")
    if not timm.models.is_model_pretrained(name):  # a tag timm does not know, or an architecture without weights
        tags = [t.partition(".")[2] for t in timm.list_pretrained(f"{arch}.*")]
        raise UserError(
            f"model.init {spec}: timm has no weights for {name}"
            + (f" (its tags: {', '.join(tags)})" if tags else "; leave model.init out for a random init")
        )
    hub_id = timm.models.get_pretrained_cfg(name).hf_hub_id
    args = {k: v for k, v in encoder.spec.model_args.items() if k not in INIT_ONLY_ARGS}
    # weights timm fetches from a plain URL (torch.hub's cache) are not the Hub's to switch off
    with hub_or_cache(f"model.init {spec}") if hub_id else nullcontext(None) as cache_only:
        try:
            model = timm.create_model(name, pretrained=True, num_classes=0, global_pool="", **args)
        except (RuntimeError, OSError, ValueError) as e:
            if cache_only and not_cached(e):
                raise UserError(
                    f"model.init {spec}: {cache_message(hub_id, cache_only)}, or leave model.init out for a random init"
                ) from e
            raise UserError(
                f"model.init {spec}: cannot fetch timm's weights for {name} ({str(e).splitlines()[0]})"
            ) from e
    found = f"timm:{name}" if "." in name else f"timm:{name}.{model.pretrained_cfg.get('tag', '')}".rstrip(".")
    return model.state_dict(), found + (f" ({hub_id})" if hub_id else "")


def initialise_encoder(method: SSLMethod, spec: str) -> str:
    """Load the encoder weights ``spec`` names into ``method``'s online encoder (and its key encoder);
    returns what they were (for the run's record).

    Raises:
        UserError: weights that cannot be found or read, or that do not fit the backbone (the
            message names the first tensor that differs).
    """
    encoder = method.encoder
    if spec == "timm" or spec.startswith("timm:"):
        state, source = _timm_weights(spec, encoder)
    else:
        from ..eval.features import load_eval_encoder

        if not spec.startswith(("local-dir:", "hf-hub:")) and not Path(spec).exists():  # "random", a typo
            raise UserFileNotFoundError(
                f"model.init {spec}: no such run, checkpoint, export folder or weights file "
                "(nor timm, timm:TAG, local-dir:PATH, hf-hub:ID); for a random init leave model.init out"
            )

        state, source = load_eval_encoder(spec).state_dict(), spec
    # An encoder's global pool or classifier carries no weights here; the feature extractor's do.
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "head.", "classifier."))}
    load_fitting(encoder.model, state, f"model.init {spec} does not fit the backbone {encoder.spec.name}")
    key = getattr(method, "key_encoder", None)
    if key is not None:
        key.load_state_dict(encoder.state_dict())
    logger.info("encoder initialised from %s", source)
    return source
