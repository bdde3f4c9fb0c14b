"""Device placement without a GPU: every method's step on fake ``cuda:0`` tensors.

Fake tensors (``FakeTensorMode``) carry a device, a shape and a dtype but no data, so a model and its
views can sit on ``cuda:0`` on a machine without a driver. The trainer's path of a step runs on them
here: uint8 views on the host → ``TrainData.to_device`` (to the device, ``BatchedMoCoV2`` with a
generator made there, or ``normalize``) → ``model(view_q, view_k, step=...)``. A tensor that the step
makes on the host and mixes with device tensors fails here, on the CPU, instead of on the first GPU:

* the fake mode itself refuses an op whose inputs sit on two devices (``FakeTensorDeviceMismatchError``,
  what CUDA would raise), and a real tensor from outside the step (``allow_non_fake_inputs=False``);
* :class:`ImplicitTransfers` refuses what CUDA accepts but pays for with a hidden host-to-device copy:
  a host tensor (not a 0-dim scalar) as an input of a device op, e.g. a host index;
* :class:`GeneratorDevices` refuses a generator on another device than the tensor it fills: the fake
  mode lets a CPU generator fill a ``cuda`` tensor, a GPU does not. ``torch.Generator(device="cuda")``
  needs a driver, so during the run it makes a CPU generator that remembers the device it was asked for.

The host-side draws (the box and π, from CPU generators, read with ``int()`` and ``bool()``) need
values: they run outside the fake mode, and π enters it as a host tensor, as it does on a GPU.

Out of reach here: backward (it needs a CUDA context) and the optimizer, real kernels and their
numerics, autocast on CUDA (it disables itself without a driver), ``non_blocking`` copies, pinned
memory, streams and events, NCCL collectives (world size 1 here), torch.compile, memory use, and
ops that run outside the Python step (DataLoader workers, accelerate's wrapping).
"""

from __future__ import annotations

import contextlib
import functools
from types import SimpleNamespace

import pytest
import torch
from torch._subclasses import fake_tensor
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from regioncl import swapping
from regioncl.backbones import create_encoder
from regioncl.data import views as views_module
from regioncl.data.views import BatchedMoCoV2, normalize, sample_params
from regioncl.methods import METHODS, build_method
from regioncl.train.loaders import TrainData

DEVICE = torch.device("cuda:0")
SIZE, BATCH = 32, 4
aten = torch.ops.aten
RealGenerator = torch.Generator


class DeviceGenerator(RealGenerator):
    """``torch.Generator(device=...)`` where that device has no driver: a CPU generator that keeps
    the device it was asked for in ``claimed_device``, for :class:`GeneratorDevices` to check."""

    def __new__(cls, device: torch.device | str = "cpu"):
        self = super().__new__(cls, device="cpu")
        self.claimed_device = torch.device(device)
        return self

    def __init__(self, device: torch.device | str = "cpu") -> None:
        pass


def _same(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index or 0) == (b.index or 0)


class GeneratorDeviceError(RuntimeError):
    pass


class GeneratorDevices(TorchFunctionMode):
    """Refuses a ``generator=`` on another device than the tensors the call fills or returns (a GPU
    refuses those; the fake mode does not). At the level of Python calls, where the generator is
    still the object the step made (the dispatcher hands ops a new wrapper of it)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        generators = [a for a in (*args, *kwargs.values()) if isinstance(a, RealGenerator)]
        for g in generators:
            claimed = getattr(g, "claimed_device", g.device)
            for t in pytree.tree_leaves(out):
                if isinstance(t, torch.Tensor) and not _same(t.device, claimed):
                    raise GeneratorDeviceError(
                        f"{getattr(func, '__name__', func)}: a generator on {claimed} "
                        f"fills a tensor on {t.device} (a GPU refuses this)"
                    )
        return out


class HostDeviceMix(RuntimeError):
    pass


class ImplicitTransfers(TorchDispatchMode):
    """Refuses an op that takes a host tensor of one or more dimensions together with device tensors
    (CUDA takes e.g. a host index, with a hidden blocking copy). The explicit copies are allowed; 0-dim
    host tensors are scalars, which CUDA takes as arguments at no cost."""

    COPIES = frozenset(
        {
            aten._to_copy.default,
            aten.copy_.default,
            aten.copy.default,
            aten._copy_from.default,
            aten._copy_from_and_resize.default,
        }
    )

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func not in self.COPIES:
            tensors = [t for t in pytree.tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)]
            host = [t for t in tensors if t.device.type == "cpu" and t.dim() > 0]
            device = [t for t in tensors if t.device.type != "cpu"]
            if host and device:
                raise HostDeviceMix(
                    f"{func}: a host tensor of shape {tuple(host[0].shape)} with tensors on "
                    f"{device[0].device} (a hidden host-to-device copy)"
                )
        return out


def place(model: torch.nn.Module, mode: fake_tensor.FakeTensorMode, device: torch.device) -> torch.nn.Module:
    """Every parameter and buffer of a model built on the real CPU, swapped in place for a fake one on
    ``device`` (building on the fake device fails: MoCo deep-copies its encoder, and a deep copy of fake
    parameters crashes at exit)."""
    done: dict[int, torch.Tensor] = {}
    for module in model.modules():
        for slot in (module._parameters, module._buffers):
            for name, t in slot.items():
                if t is None:
                    continue
                if id(t) not in done:
                    with fake_tensor.unset_fake_temporarily():  # the real tensor is read outside the mode
                        fake = mode.from_tensor(t.detach())
                    with mode:
                        fake = fake.to(device)
                    if isinstance(t, torch.nn.Parameter):
                        fake = torch.nn.Parameter(fake, requires_grad=t.requires_grad)
                    done[id(t)] = fake
                slot[name] = done[id(t)]
    return model


@contextlib.contextmanager
def fake_cuda():
    """A fake ``cuda:0`` for a step: yields the fake mode and leaves nothing fake behind (the cached
    constants of the views are cleared on entry and exit, the patches undone)."""
    mode = fake_tensor.FakeTensorMode(allow_non_fake_inputs=False)

    def on_host(draw):
        @functools.wraps(draw)
        def drawn(*args, **kwargs):
            with fake_tensor.unset_fake_temporarily():
                out = draw(*args, **kwargs)
            return mode.from_tensor(out) if isinstance(out, torch.Tensor) else out

        return drawn

    views_module._constant.cache_clear()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(torch, "Generator", DeviceGenerator)
            patch.setattr(swapping, "pairing_permutation", on_host(swapping.pairing_permutation))
            patch.setattr(swapping, "sample_box", on_host(swapping.sample_box))
            with mode, ImplicitTransfers(), GeneratorDevices():
                yield mode
    finally:
        views_module._constant.cache_clear()


def small(name: str) -> torch.nn.Module:
    """A tiny model on the real CPU, channels-last as the trainer makes it."""
    torch.manual_seed(0)
    model = build_method(
        name,
        create_encoder("resnet10t", output_stride=8),
        queue_size=16,
        hidden_dim=32,
        dim=16,
        pred_dim=8,
        momentum=0.9,
        bn_groups=2,
    )
    model.check(SIZE, BATCH)
    return model.to(memory_format=torch.channels_last).train()


def host_views(seed: int = 0) -> torch.Tensor:
    """A batch of two uint8 views as the loader hands it over, on the host."""
    g = RealGenerator().manual_seed(seed)
    return torch.randint(0, 256, (2, BATCH, 3, SIZE, SIZE), dtype=torch.uint8, generator=g)


def to_device(images: torch.Tensor, view: int, step: int, gpu_augment: bool) -> torch.Tensor:
    """The trainer's own ``TrainData.to_device`` on one process of a GPU run."""
    data = SimpleNamespace(
        accelerator=SimpleNamespace(device=DEVICE, process_index=0),
        gpu_augment=BatchedMoCoV2(SIZE) if gpu_augment else None,
        cfg=SimpleNamespace(run=SimpleNamespace(seed=0, channels_last=True)),
    )
    return TrainData.to_device(data, images, view, step)


def fake_step(method: str, gpu_augment: bool, step: int = 3) -> dict[str, torch.Tensor]:
    """One step's forward on fake ``cuda:0``: the model, the views, the augmentation, the losses."""
    model, batch = small(method), host_views().unbind()
    with fake_cuda() as mode:
        place(model, mode, DEVICE)
        host = [mode.from_tensor(v) for v in batch]  # the pinned batch, before the copy
        x = [to_device(v, i, step, gpu_augment) for i, v in enumerate(host)]
        for v in x:
            assert v.device == DEVICE and v.dtype == torch.float32 and v.shape == (BATCH, 3, SIZE, SIZE)
            assert v.is_contiguous(memory_format=torch.channels_last)
        out = model(x[0], x[1], step=step)
        for t in (*model.parameters(), *model.buffers()):
            assert t.device == DEVICE
    return out


@pytest.mark.parametrize("gpu_augment", [False, True])
@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.slow
def test_a_step_on_a_fake_gpu_keeps_every_tensor_on_the_device(method, gpu_augment):
    out = fake_step(method, gpu_augment)
    assert "loss" in out and ("loss_reg" in out) == (METHODS[method][1] is not None)
    for name, value in out.items():
        assert isinstance(value, fake_tensor.FakeTensor), name
        assert value.device == DEVICE and value.dim() == 0, name


def test_the_device_augmentation_alone_on_a_fake_gpu():
    images = host_views()[0]
    with fake_cuda() as mode:
        on_device = mode.from_tensor(images).to(DEVICE)
        g = torch.Generator(device=DEVICE).manual_seed(0)
        out = BatchedMoCoV2(SIZE)(on_device, g)
        assert out.device == DEVICE and out.dtype == torch.float32 and out.shape == images.shape
        params = sample_params(BATCH, g, DEVICE)
        assert all(p.device == DEVICE for p in params.values())
        float_out = BatchedMoCoV2(SIZE).apply(on_device.float() / 255, params)
        assert float_out.device == DEVICE
        assert normalize(on_device).device == DEVICE
    # Nothing fake is left behind: the cache of constants is empty, the patches are undone, the CPU path runs.
    assert views_module._constant.cache_info().currsize == 0
    assert torch.Generator is RealGenerator and not hasattr(swapping.sample_box, "__wrapped__")
    assert torch.isfinite(normalize(images)).all()


# ---------------------------------------------------------------- the guard can fail


def test_the_guard_refuses_a_host_tensor_made_in_the_step(monkeypatch):
    from regioncl.methods import mocov2

    real = mocov2.info_nce
    monkeypatch.setattr(mocov2, "info_nce", lambda q, *a: real(q + torch.zeros(q.shape[1]), *a))
    # its own error class in newer torch, a RuntimeError before (torch 2.11)
    mismatch = getattr(fake_tensor, "FakeTensorDeviceMismatchError", RuntimeError)
    with pytest.raises(mismatch, match="(?i)device"):
        fake_step("mocov2", gpu_augment=False)


def test_the_guard_refuses_a_host_generator_for_device_tensors(monkeypatch):
    def on_host_generator(self, images, generator):
        return self.apply(images, sample_params(images.shape[0], torch.Generator().manual_seed(0), images.device))

    monkeypatch.setattr(BatchedMoCoV2, "__call__", on_host_generator)
    with pytest.raises(GeneratorDeviceError, match="generator on cpu fills a tensor on cuda:0"):
        fake_step("simsiam", gpu_augment=True)


def test_the_guard_refuses_a_host_index_into_a_device_tensor():
    with fake_cuda():
        x = torch.randn(4, 3, device=DEVICE)
        assert x.device == DEVICE
        with pytest.raises(HostDeviceMix, match="host tensor of shape"):
            x[torch.arange(4).flip(0)]
        assert x[torch.arange(4, device=DEVICE)].device == DEVICE
