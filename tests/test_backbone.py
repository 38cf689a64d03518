"""The EfficientNet-Lite0 backbone really carries its ImageNet weights."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from engine.models.backbones.efficientnet_lite import (
    IMAGENET_MEAN, IMAGENET_STD, adapt_first_conv, load_imagenet_state_dict,
    pretrained_efficientnet_lite0)

EGYPTIAN_CAT, TABBY, TIGER_CAT = 285, 281, 282


def test_pretrained_lite0_recognises_the_cat_photograph():
    from skimage import data

    img = torch.from_numpy(data.chelsea().astype(np.float32) / 255).permute(2, 0, 1)[None]
    x = F.interpolate(img, size=(224, 224), mode="bilinear", antialias=True)
    x = (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    net = pretrained_efficientnet_lite0().eval()
    state = load_imagenet_state_dict()
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
    net = pretrained_efficientnet_lite0(in_bands=4)
    torch.testing.assert_close(net._conv_stem.weight.data, w4)
