"""Backbone registry: shapes, ResNet-18 structure, name resolution, errors, trainability. Offline."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from backbone import (Backbone, ResNet18Options, SmallCNNOptions, TimmOptions, create_backbone,
                      get_backbone_options, list_backbones, resolve_backbone_name)
from utils.errors import UserError
from utils.options import NoOptions

REPO = Path(__file__).resolve().parents[1]
TINY_TIMM = "test_resnet"  # ~0.37M parameters, ships with timm for its own tests


def _check_returnt(model: Backbone, num_classes: int, feature_dim: int, size: int = 32) -> None:
    model.eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (2, num_classes)
        assert torch.allclose(model(x, returnt="out"), out, atol=1e-5)
        feats = model(x, returnt="features")
        assert feats.shape == (2, feature_dim)
        both = model(x, returnt="both")
        assert isinstance(both, tuple) and len(both) == 2
        assert both[0].shape == (2, num_classes) and both[1].shape == (2, feature_dim)
        assert torch.allclose(both[0], out, atol=1e-5) and torch.allclose(both[1], feats, atol=1e-5)
        # logits are the classifier applied to the features
        assert torch.allclose(model.classifier(feats), out, atol=1e-5)
    assert model.num_classes == num_classes and model.feature_dim == feature_dim
    with pytest.raises(ValueError, match="returnt"):
        model(x, returnt="logits")


def test_list_backbones():
    assert list_backbones() == ["resnet18", "small-cnn"]


def test_resnet18_shapes():
    model = create_backbone("resnet18", 7, ResNet18Options(num_filters=4))
    assert isinstance(model, Backbone) and isinstance(model.classifier, nn.Linear)
    _check_returnt(model, 7, 32)


def test_resnet18_cifar_structure():
    model = create_backbone("resnet18", 10)
    assert model.feature_dim == 512
    assert sum(p.numel() for p in model.parameters()) == 11_173_962
    stem = model.conv1
    assert isinstance(stem, nn.Conv2d)
    assert stem.kernel_size == (3, 3) and stem.stride == (1, 1) and stem.out_channels == 64
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    assert isinstance(model.classifier, nn.Linear) and model.classifier.in_features == 512
    widths = [model.layer1[-1].conv2.out_channels, model.layer2[-1].conv2.out_channels,
              model.layer3[-1].conv2.out_channels, model.layer4[-1].conv2.out_channels]
    assert widths == [64, 128, 256, 512]
    assert all(len(layer) == 2 for layer in (model.layer1, model.layer2, model.layer3, model.layer4))


def test_small_cnn_shapes():
    model = create_backbone("small-cnn", 10)
    assert isinstance(model.classifier, nn.Linear)
    _check_returnt(model, 10, 8 * SmallCNNOptions().cnn_width)
    _check_returnt(create_backbone("small-cnn", 3, {"cnn_width": 4}), 3, 32, size=24)


def test_timm_shapes():
    model = create_backbone(f"timm:{TINY_TIMM}", 5, TimmOptions(timm_pretrained=False))
    assert model.feature_dim == model.model.num_features
    _check_returnt(model, 5, model.model.num_features)
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # the wrapper's logits are exactly the timm model's own output
        assert torch.allclose(model(x), model.model(x), atol=1e-5)


def test_name_resolution():
    assert resolve_backbone_name("small_cnn") == resolve_backbone_name("small-cnn") == "small-cnn"
    assert resolve_backbone_name("Small_CNN") == "small-cnn"
    assert resolve_backbone_name("resnet18") == "resnet18"  # local wins over timm's resnet18
    assert resolve_backbone_name(f"timm:{TINY_TIMM}") == f"timm:{TINY_TIMM}"
    assert resolve_backbone_name(TINY_TIMM) == f"timm:{TINY_TIMM}"  # bare timm name
    assert resolve_backbone_name("timm:resnet18") == "timm:resnet18"
    assert isinstance(create_backbone("small_cnn", 4), type(create_backbone("small-cnn", 4)))


def test_get_backbone_options():
    assert get_backbone_options("resnet18") is ResNet18Options
    assert get_backbone_options("small_cnn") is SmallCNNOptions
    assert get_backbone_options(f"timm:{TINY_TIMM}") is TimmOptions
    assert ResNet18Options().num_filters == 64
    assert TimmOptions().timm_pretrained is False


def test_backbone_without_options_gets_nooptions(monkeypatch):
    import backbone

    class Plain(Backbone):
        def __init__(self, num_classes, options):
            super().__init__()
            self.options, self.num_classes, self.feature_dim = options, num_classes, 3
            self.classifier = nn.Linear(3, num_classes)

        def forward_features(self, x):
            return x.mean(dim=(2, 3))

    monkeypatch.setitem(backbone._REGISTRY, "plain", Plain)
    assert get_backbone_options("plain") is NoOptions
    assert isinstance(create_backbone("plain", 2).options, NoOptions)


def test_unknown_names():
    with pytest.raises(UserError) as info:
        create_backbone("resnet81", 10)
    msg = str(info.value)
    assert "Did you mean 'resnet18'?" in msg
    assert "resnet18" in msg and "small-cnn" in msg and "timm:<name>" in msg
    with pytest.raises(UserError, match="Did you mean 'small-cnn'"):
        get_backbone_options("smal-cnn")
    with pytest.raises(UserError, match="unknown timm model 'resnet18x'.*timm:resnet18"):
        create_backbone("timm:resnet18x", 10)
    with pytest.raises(UserError):
        create_backbone("", 10)


def test_options_validation():
    with pytest.raises(UserError, match="num_filters.*minimum 1"):
        create_backbone("resnet18", 10, ResNet18Options(num_filters=0))
    with pytest.raises(UserError, match="cnn_width.*minimum 1"):
        create_backbone("small-cnn", 10, {"cnn_width": 0})
    with pytest.raises(UserError, match="did you mean 'num_filters'"):
        create_backbone("resnet18", 10, {"num_filter": 8})
    with pytest.raises(TypeError):
        create_backbone("resnet18", 10, SmallCNNOptions())
    with pytest.raises(ValueError):
        create_backbone("small-cnn", 0)


def test_options_are_option_fields():
    import dataclasses
    for cls in (ResNet18Options, SmallCNNOptions, TimmOptions):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help"
    assert "HF" in dataclasses.fields(TimmOptions)[0].metadata["help"] or \
        "Hugging Face" in dataclasses.fields(TimmOptions)[0].metadata["help"]


def test_timm_pretrained_failure_is_user_error(monkeypatch):
    import timm

    calls = []

    def offline_create_model(name, pretrained=False, **kwargs):
        calls.append(pretrained)
        raise OSError("We couldn't connect to 'https://huggingface.co' to load this file")

    monkeypatch.setattr(timm, "create_model", offline_create_model)
    with pytest.raises(UserError) as info:
        create_backbone(f"timm:{TINY_TIMM}", 10, {"timm_pretrained": True})
    msg = str(info.value)
    assert calls == [True]
    assert "--timm_pretrained 0" in msg and "Hugging Face" in msg and TINY_TIMM in msg


def test_small_cnn_sgd_reduces_loss():
    torch.manual_seed(0)
    model = create_backbone("small-cnn", 10)
    x = torch.randn(32, 3, 32, 32)
    y = torch.arange(32) % 10
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def test_import_has_no_side_effects():
    code = ("import sys, backbone; "
            "assert 'timm' not in sys.modules, 'timm imported eagerly'; "
            "print(backbone.list_backbones())")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['resnet18', 'small-cnn']"
