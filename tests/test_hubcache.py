"""Weights from the Hugging Face cache on a machine that does not reach the Hub, without HF_HUB_OFFLINE:
read from the cache, or, where it lacks them, one error at once rather than after huggingface_hub's retries;
the offline switch put back after."""

from __future__ import annotations

import logging
import socket

import pytest
import torch

from regioncl.hubcache import _PROXY_VARIABLES, _connects


def closed_port() -> int:
    """A local port nothing listens on: a connection there is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def unreachable_hub(monkeypatch):
    """The Hub at a name that does not resolve (as on a machine without network), online mode (a
    user's shell without HF_HUB_OFFLINE): huggingface_hub retries such a request with backoff."""
    from huggingface_hub import constants

    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", "https://hub.invalid")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    _connects.cache_clear()  # the probe's answer is kept for the process: each test asks afresh
    return constants


def test_reachability_is_asked_of_the_endpoint(monkeypatch):
    from regioncl.hubcache import hub_reachable

    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert hub_reachable(f"http://127.0.0.1:{server.getsockname()[1]}")
    assert not hub_reachable(f"http://127.0.0.1:{closed_port()}")
    assert not hub_reachable("https://hub.invalid")  # a name that never resolves
    # behind a proxy the host need not answer: huggingface_hub goes through the proxy
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert hub_reachable(f"http://127.0.0.1:{closed_port()}")


def test_an_unreachable_hub_means_the_cache_only_and_the_switch_is_put_back(unreachable_hub, monkeypatch):
    from regioncl.hubcache import hub_or_cache

    lookups = []
    resolve = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: lookups.append(a[0]) or resolve(*a, **k))
    with pytest.raises(KeyError), hub_or_cache("x") as why:
        assert unreachable_hub.HF_HUB_OFFLINE and "cannot be reached" in why
        raise KeyError  # an error inside leaves online mode as it was, too
    assert unreachable_hub.HF_HUB_OFFLINE is False
    with hub_or_cache("x") as why:  # a command loads its encoder's config, then its weights: one probe
        assert unreachable_hub.HF_HUB_OFFLINE and "cannot be reached" in why
    assert lookups == ["hub.invalid"]
    unreachable_hub.HF_HUB_OFFLINE = True
    with hub_or_cache("x") as why:
        assert why == "offline mode is set (HF_HUB_OFFLINE)"
    assert unreachable_hub.HF_HUB_OFFLINE is True


def test_timm_weights_come_from_the_cache_without_the_retries(unreachable_hub, monkeypatch, tmp_path, caplog):
    """model.init timm on an offline machine with the weights in its cache: loaded from it."""
    import timm
    from test_user_paths import timm_cache

    from regioncl.backbones import create_encoder
    from regioncl.train.init import _timm_weights

    torch.manual_seed(3)
    weights = timm.create_model("resnet18", num_classes=0).state_dict()
    timm_cache(tmp_path, "resnet18.a1_in1k", weights)
    monkeypatch.setattr(unreachable_hub, "HF_HUB_CACHE", str(tmp_path))
    with caplog.at_level(logging.INFO):
        state, source = _timm_weights("timm", create_encoder("resnet18"))
    assert source.startswith("timm:resnet18.a1_in1k")
    assert all(torch.equal(state[k], v) for k, v in weights.items())
    assert "cannot be reached from here; reading the Hugging Face cache only" in caplog.text
    assert unreachable_hub.HF_HUB_OFFLINE is False


def _load(what: str) -> None:
    from regioncl.backbones import create_encoder
    from regioncl.eval.features import load_eval_encoder
    from regioncl.eval.finetune import load_finetune_model
    from regioncl.train.init import _timm_weights

    if what == "model.init":
        _timm_weights("timm", create_encoder("resnet18"))
    elif what == "knn":
        load_eval_encoder("hf-hub:someone/enc")
    else:
        load_finetune_model("hf-hub:someone/enc", 3)


@pytest.mark.parametrize(
    "what, repo", [("model.init", "timm/resnet18.a1_in1k"), ("knn", "someone/enc"), ("finetune", "someone/enc")]
)
def test_weights_not_in_the_cache_are_one_error_at_once_that_says_why(
    unreachable_hub, monkeypatch, tmp_path, caplog, what, repo
):
    """Not in the cache: huggingface_hub, asked online, would retry each file with backoff (it logs each
    try) before failing; here the error comes at once, names the repository and says why. Fine-tuning's
    is the one-line error the other commands give, not huggingface_hub's traceback."""
    from regioncl.errors import UserError

    monkeypatch.setattr(unreachable_hub, "HF_HUB_CACHE", str(tmp_path))
    says = rf"{repo} is not in the Hugging Face cache \({tmp_path}\) and https://hub.invalid cannot be reached"
    with caplog.at_level(logging.INFO), pytest.raises(UserError, match=says):
        _load(what)
    assert "Retrying" not in caplog.text


def test_weights_timm_does_not_have_are_refused_before_the_hub_is_asked(unreachable_hub, caplog):
    from regioncl.backbones import create_encoder
    from regioncl.errors import UserError
    from regioncl.train.init import _timm_weights

    with caplog.at_level(logging.INFO):
        with pytest.raises(UserError, match=r"timm has no weights for resnet18.nope \(its tags: a1_in1k, a2_in1k"):
            _timm_weights("timm:nope", create_encoder("resnet18"))
        with pytest.raises(UserError, match="timm has no weights for resnet50_mlp; leave model.init out"):
            _timm_weights("timm", create_encoder("resnet50_mlp"))
    assert "cannot be reached" not in caplog.text


def test_a_malformed_hub_id_is_one_error():
    from regioncl.errors import UserError
    from regioncl.eval.finetune import load_finetune_model

    with pytest.raises(UserError, match="cannot load hf-hub:a b/c with timm: "):
        load_finetune_model("hf-hub:a b/c", 3)
