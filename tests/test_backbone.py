"""The EfficientNet-Lite backbones really carry their ImageNet weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.models.backbones.efficientnet_lite import (
    IMAGENET_MEAN, IMAGENET_STD, adapt_first_conv, load_imagenet_state_dict,
    pretrained_efficientnet_lite)

EGYPTIAN_CAT, TABBY, TIGER_CAT = 285, 281, 282


@pytest.mark.parametrize("variant, px", [("efficientnet_lite0", 224),
                                         ("efficientnet_lite1", 240),
                                         ("efficientnet_lite2", 260)])
def test_pretrained_lite_recognises_the_cat_photograph(variant, px):
    from skimage import data

    img = torch.from_numpy(data.chelsea().astype(np.float32) / 255).permute(2, 0, 1)[None]
    x = F.interpolate(img, size=(px, px), mode="bilinear", antialias=True)
    x = (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    net = pretrained_efficientnet_lite(variant).eval()
    state = load_imagenet_state_dict(variant)
    with torch.no_grad():
        logits = net(x).mean((2, 3)) @ state["_fc.weight"].T + state["_fc.bias"]
    probs = logits.softmax(1)[0]
    assert int(probs.argmax()) == EGYPTIAN_CAT
    assert float(probs[[EGYPTIAN_CAT, TABBY, TIGER_CAT]].sum()) > 0.8


def test_first_conv_is_adapted_not_reinitialised_for_more_bands():
    w = load_imagenet_state_dict()["_conv_stem.weight"]
    w4 = adapt_first_conv(w, 4)
    assert w4.shape[1] == 4
    torch.testing.assert_close(w4[:, :3], w * 3 / 4)
    torch.testing.assert_close(w4[:, 3], w.mean(1) * 3 / 4)
    net = pretrained_efficientnet_lite("efficientnet_lite0", in_bands=4)
    torch.testing.assert_close(net._conv_stem.weight.data, w4)


def test_resnet_backbone_loads_weights_from_a_local_file_and_adapts_bands(tmp_path):
    import torchvision
    from safetensors.torch import save_file

    from engine.models.backbones import build_backbone

    torch.manual_seed(0)
    reference = torchvision.models.resnet50(weights=None).state_dict()
    path = tmp_path / "resnet50.safetensors"
    save_file({k: v.contiguous() for k, v in reference.items()}, str(path))
    net = build_backbone("resnet50", in_bands=5, pretrained=True, weights_file=path)
    torch.testing.assert_close(net.body[0].weight.data,
                               adapt_first_conv(reference["conv1.weight"], 5))
    torch.testing.assert_close(net.body[4][0].conv1.weight.data, reference["layer1.0.conv1.weight"])
    assert net(torch.zeros(1, 5, 64, 64)).shape == (1, 2048, 2, 2)


def test_resnet_without_a_weights_file_says_how_to_get_pretrained_weights():

    from engine.errors import ModelFileError
    from engine.models.backbones import build_backbone

    with pytest.raises(ModelFileError, match="local weights file"):
        build_backbone("resnet101", in_bands=3, pretrained=True)
