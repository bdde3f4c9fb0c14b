"""Reading weights from the Hugging Face Hub on a machine that may not reach it.

Without ``HF_HUB_OFFLINE=1``, huggingface_hub meets an unreachable Hub, for a file its cache does
not hold, by retrying with backoff (about 20 seconds a file, a warning a try) before it gives up;
timm asks for two files. :func:`hub_or_cache` asks once per process, with a short timeout,
whether the Hub answers, and where it does not reads the cache alone: the weights found, or one
error at once (:func:`not_cached`, :func:`cache_message`).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from functools import cache
from urllib.parse import urlsplit

logger = logging.getLogger("regioncl")

#: seconds to wait, in all, for the Hub to accept a connection
PROBE_TIMEOUT = 5.0
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


@cache
def _connects(host: str, port: int, timeout: float) -> bool:
    """Whether ``host:port`` accepts a TCP connection within ``timeout`` seconds over all its
    addresses (a dropped connection to each of several addresses would otherwise wait each)."""
    deadline = time.monotonic() + timeout
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:  # the name does not resolve
        return False
    for family, kind, proto, _, address in addresses:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        with socket.socket(family, kind, proto) as s:
            s.settimeout(left)
            try:
                s.connect(address)
            except OSError:
                continue
            return True
    return False


def hub_reachable(endpoint: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether ``endpoint``'s host accepts a TCP connection (asked once per process). Behind a
    proxy the host itself need not answer, so there it is taken as reachable and
    huggingface_hub finds out."""
    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return True
    url = urlsplit(endpoint)
    if not url.hostname:
        return True
    return _connects(url.hostname, url.port or (443 if url.scheme == "https" else 80), timeout)


@contextmanager
def hub_or_cache(what: str) -> Iterator[str | None]:
    """Within it, huggingface_hub reads the Hugging Face cache only where the Hub cannot be
    reached (or offline mode is set). Yields why it reads the cache only (None where it asks the
    Hub), so that an error can say why the weights were not found. It switches huggingface_hub's
    process-wide offline mode: for the main thread, not for threads loading weights at once."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        yield "offline mode is set (HF_HUB_OFFLINE)"
        return
    if hub_reachable(constants.ENDPOINT):
        yield None
        return
    why = f"{constants.ENDPOINT} cannot be reached from here"
    logger.info("%s: %s; reading the Hugging Face cache only", what, why)
    constants.HF_HUB_OFFLINE = True
    try:
        yield why
    finally:
        constants.HF_HUB_OFFLINE = False


def hub_or_cache_for(spec: str) -> AbstractContextManager[str | None]:
    """:func:`hub_or_cache` for a timm name that reads the Hub (``hf-hub:``); nothing for the others."""
    return hub_or_cache(spec) if spec.startswith("hf-hub:") else nullcontext(None)


def not_cached(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) is huggingface_hub's "not in the cache, and the Hub
    not asked", as opposed to a file that is there but does not load."""
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def cache_message(repo_id: str, why: str) -> str:
    """What to say of a Hub repository's weights that the cache lacks, where only the cache is read."""
    from huggingface_hub import constants

    return (
        f"{repo_id} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and {why}: copy it "
        "there from a machine that reaches the Hub (or point HF_HUB_CACHE at such a copy)"
    )
