import pytest
import torch

from regioncl.backbones import create_encoder, resolve_backbone


@pytest.mark.parametrize(
    "name,kwargs,stride",
    [("resnet18", {}, 32), ("resnet18", {"output_stride": 8}, 8), ("resnet18", {"output_stride": 16}, 16)],
)
def test_stride_is_read_from_the_model_and_matches_the_feature_map(name, kwargs, stride):
    enc = create_encoder(name, **kwargs)
    assert enc.stride == stride
    out = enc(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, enc.num_features, 64 // stride, 64 // stride)


def test_image_size_not_multiple_of_stride_is_refused():
    enc = create_encoder("resnet18")
    assert enc.check_image_size(224) == 7
    with pytest.raises(ValueError, match="not a multiple of the output stride 32"):
        enc.check_image_size(100)


def test_unknown_backbone_is_refused():
    with pytest.raises(ValueError, match="Unknown backbone 'resnet5000'"):
        create_encoder("resnet5000")


@pytest.mark.parametrize("name,features", [("resnet50", 2048), ("resnet50w2", 4096), ("resnet50w4", 8192)])
def test_paper_resnets_are_plain_timm_resnet50(name, features):
    spec = resolve_backbone(name)
    assert spec.architecture == "resnet50"
    # Build on the meta device: the 375 M-parameter w4 would take seconds to initialise.
    with torch.device("meta"):
        enc = create_encoder(name)
    assert enc.num_features == features and enc.stride == 32
    params = sum(p.numel() for p in enc.parameters())
    expected = {"resnet50": 23.5e6, "resnet50w2": 93.9e6, "resnet50w4": 375.4e6}[name]
    assert abs(params - expected) / expected < 0.01


def test_non_cnn_output_is_refused():
    enc = create_encoder("vit_tiny_patch16_224", img_size=32)
    with pytest.raises(ValueError, match="feature map"):
        enc(torch.randn(1, 3, 32, 32))
