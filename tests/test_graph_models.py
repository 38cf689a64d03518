"""The graph-based models (Deep-LIFT, ML-GCN) and the ResNet baseline on tiny inputs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.errors import ModelFileError
from engine.graph.label_graph import LabelGraph
from engine.models.gcn import AttentionGraphConvolution, ResidualGraphBlock
from engine.models.registry import BuildRequest, build

LABELS = ["water", "ship", "dock", "trees", "buildings"]
TABLE = np.array([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 0, 0, 1, 0], [0, 0, 0, 1, 1],
                  [1, 1, 1, 0, 1], [0, 0, 0, 1, 0]])


def request(**config) -> BuildRequest:
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((len(LABELS), 16))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return BuildRequest(config, len(LABELS), 3, False, emb.tolist(),
                        LabelGraph.mine(LABELS, TABLE).to_json())


def test_agcn_aggregation_rows_sum_to_one_in_absolute_value_and_follow_edges():
    adjacency = torch.tensor([[0, 1, 0], [0, 0, 1], [0, 0, 0]], dtype=torch.float32)
    layer = AttentionGraphConvolution(8, 4, adjacency)
    g = layer.aggregation(torch.randn(3, 8))
    assert torch.allclose(g.abs().sum(1), torch.ones(3), atol=1e-5)
    assert g[0, 2] == 0 and g[2, 0] == 0 and g[2, 1] == 0  # no edge, no weight
    assert layer(torch.randn(3, 8)).shape == (3, 4)


def test_residual_graph_block_adds_its_input():
    block = ResidualGraphBlock(4, torch.zeros(3, 3))
    for p in block.parameters():
        torch.nn.init.zeros_(p)
    x = torch.rand(3, 4)
    assert torch.allclose(block(x), x)  # F(x) = 0 leaves x (positive, so LeakyReLU keeps it)


@pytest.mark.parametrize("arch,config", [("deeplift", {"variant": "agcn"}),
                                         ("deeplift", {"variant": "rgcn"}),
                                         ("mlgcn", {}),
                                         ("resnet", {"backbone": "resnet50"}),
                                         ("cma", {}), ("ms-cma", {}), ("srdl", {})])
def test_model_outputs_and_per_label_attention_shapes(arch, config):
    model = build(arch, request(**config)).eval()
    out = model(torch.randn(2, 3, 64, 64))
    assert out.logits.shape == (2, len(LABELS))
    assert out.attention.shape[:2] == (2, len(LABELS))
    assert 0 <= float(out.attention.min()) and float(out.attention.max()) <= 1
    assert not out.attention.requires_grad


def test_deeplift_lift_maps_are_label_embeddings_times_features():
    model = build("deeplift", request(variant="agcn")).eval()
    feats = torch.randn(1, model.backbone.out_channels, 2, 2)
    labels = model.reembed(model.label_embeddings)
    labels = torch.nn.functional.normalize(labels, dim=1) * model.gain  # unit rows, gain
    expected = (labels @ feats[0].flatten(1)).reshape(len(LABELS), 2, 2)  # Eq. 5
    torch.testing.assert_close(model.lift_maps(feats)[0], expected)
    m_c = model.channel_attention(model.lift_maps(feats))
    assert m_c.shape == (1, len(LABELS)) and bool(((m_c > 0) & (m_c < 1)).all())


def test_deeplift_at_stride_16_gives_lift_maps_twice_as_fine_from_both_stages():
    coarse = build("deeplift", request(variant="agcn")).eval()
    x = torch.randn(1, 3, 64, 64)
    assert coarse(x).attention.shape[-1] == 2
    model = build("deeplift", request(variant="agcn", feature_stride=16)).train()
    out = model(x)
    assert out.attention.shape[-1] == 4
    out.logits.sum().backward()
    block16 = model.backbone.stage_outputs["stride16"][0]
    last = len(model.backbone._blocks) - 1
    # the stride-16 block that the fine map taps is trained by it, not only the last one
    grads = [n for n, p in model.backbone.named_parameters()
             if p.grad is not None and p.grad.abs().sum() > 0]
    assert any(n.startswith(f"_blocks.{block16}.") for n in grads)
    assert any(n.startswith(f"_blocks.{last}.") for n in grads)


def test_deeplift_refuses_a_feature_stride_it_cannot_give_by_name():
    from engine.errors import ModelFileError

    with pytest.raises(ModelFileError, match="deeplift feature_stride 8 is not one of 16, 32"):
        build("deeplift", request(variant="agcn", feature_stride=8))


def test_deeplift_label_specific_term_scores_each_label_from_its_own_channel():
    model = build("deeplift", request(variant="agcn", label_loss=0.5)).train()
    with torch.no_grad():
        model.own_label.log_scale.fill_(np.log(2.0))
        model.own_label.bias.copy_(torch.arange(len(LABELS), dtype=torch.float32))
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    a = model.lift_maps(model.backbone(x))
    a_att = model.channel_attention(a)[:, :, None, None] * a
    own = 2.0 * (a_att.mean(dim=(2, 3)) + a_att.amax(dim=(2, 3))) / 2 + model.own_label.bias
    torch.testing.assert_close(out.aux["own_label_logits"], own)
    y = torch.zeros(2, len(LABELS))
    y[0, 1] = 1
    expected = 0.5 * torch.nn.functional.binary_cross_entropy_with_logits(own, y)
    torch.testing.assert_close(model.extra_losses(out, y)["own_label"], expected)
    # the analyst's map: channel c's score of a tile made of that location alone
    located = torch.sigmoid(2.0 * a_att + model.own_label.bias[:, None, None])
    torch.testing.assert_close(out.attention, located * torch.sigmoid(out.logits)[..., None, None])


def test_deeplift_without_the_term_is_the_papers_eq8_alone():
    model = build("deeplift", request(variant="agcn")).train()
    out = model(torch.randn(1, 3, 64, 64))
    assert model.own_label is None and model.extra_losses(out, torch.ones(1, len(LABELS))) == {}
    assert not any("own_label" in k for k in model.state_dict())  # older model files load


@pytest.mark.parametrize("arch,lr", [("deeplift", 1e-2), ("mlgcn", 1e-2), ("srdl", 1e-2)])
def test_graph_models_train_with_decreasing_loss(arch, lr):
    import dataclasses

    torch.manual_seed(0)
    model = build(arch, dataclasses.replace(request(), pretrained=True))  # ImageNet features
    model.backbone.requires_grad_(False)
    model.backbone.eval()
    x = torch.rand(6, 3, 64, 64)
    y = torch.tensor(TABLE, dtype=torch.float32)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).logits, y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.parametrize("arch,extra", [("deeplift", ["--variant", "rgcn"]), ("srdl", []),
                                        ("ms-cma", ["--loss", "imbalance-bce"])])
def test_graph_models_train_end_to_end_and_annotate(tmp_path, run_cli, arch, extra):
    from conftest import DATA, SAMPLE

    out = tmp_path / arch
    res = run_cli("train", "--arch", arch, *extra, "--dataset",
                  f"ucmerced:{DATA / 'ucmerced_mini'}", "--out", out, "--epochs", "1",
                  "--image-size", "64", "--freeze-backbone")
    assert res.code == 0, res.err
    spec = json.loads((out / "model.json").read_text())
    assert spec["arch"] == arch and len(spec["label_embeddings"]) == 17
    res = run_cli("annotate", SAMPLE, "--out", tmp_path / "s.gpkg", "--model", out,
                  "--allow-gsd-mismatch", "--json-progress")
    assert res.code == 0, res.err


def test_asge_cosine_similarities_approach_the_symmetrised_adjacency():
    from engine.models.cma import asge_target, fit_asge

    graph = LabelGraph.mine(LABELS, TABLE).to_json()
    embeddings, losses = fit_asge(graph, len(LABELS), steps=300)
    e = torch.nn.functional.normalize(embeddings, dim=1)
    target = asge_target(graph)
    assert losses[-1] < 0.2 * losses[0]
    strong = target >= 0.5
    assert torch.allclose((e @ e.T)[strong], target[strong], atol=0.15)
    assert torch.allclose(target, target.T)


@pytest.mark.parametrize("arch", ["cma", "ms-cma"])
def test_cma_attention_is_a_relu_cosine_normalised_over_locations(arch):
    torch.manual_seed(0)
    model = build(arch, request()).eval()
    head = model.heads["stride32"]
    feats = head.reduce(torch.randn(2, model.backbone.out_channels, 3, 3))
    a = head.attention(feats, model.label_embeddings)
    z = head.similarity(feats, model.label_embeddings).detach()
    assert a.shape == (2, len(LABELS), 9) and bool((a >= 0).all())
    # Eq. 8 normalises over locations; a label no location points towards (every cosine
    # negative, which the signed projections allow) gets no attention at all
    matched = (z > 0).any(-1).float()
    assert torch.allclose(a.sum(-1), matched, atol=1e-5)
    assert float(z.max()) <= 1 + 1e-6 and float(z.min()) >= 0
    out = model(torch.randn(2, 3, 64, 64))
    assert out.logits.shape == (2, len(LABELS)) and out.attention.shape[:2] == (2, len(LABELS))
    assert len(model.heads) == (2 if arch == "ms-cma" else 1)


def test_imbalance_weighted_loss_weighs_rare_positives_up():
    from engine.train.losses import build_loss

    targets = np.array([[1, 0], [0, 0], [0, 0], [0, 1]], dtype=np.float32)  # both rare
    loss = build_loss("imbalance-bce", np.array([[1, 1], [1, 0], [1, 0], [1, 0]], np.float32))
    logits = torch.zeros(4, 2)
    plain = torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.tensor(targets))
    # label 0 is in every training image (p=1): positives weight e^0, negatives e^0.4
    assert float(loss(logits, torch.tensor(targets))) > float(plain)


def test_object_erasing_removes_the_interval_holding_the_global_peak():
    from engine.models.srdl import erase_peak_region, peak_interval

    m = torch.tensor([0.1, 0.6, 0.7, 0.2, 0.9, 1.0, 0.8, 0.1])
    assert peak_interval(m, 0.5) == (4, 7)  # the run holding 1.0, not the 0.6-0.7 one
    sa = torch.zeros(6, 8)
    sa[1:3, 1:3] = 0.6   # a weaker object
    sa[3:5, 4:7] = 1.0   # the most obvious one
    erased = erase_peak_region(sa, 0.5)
    assert float(erased[3:5, 4:7].max()) == 0 and torch.equal(erased[1:3, 1:3], sa[1:3, 1:3])


def test_object_erasing_changes_nothing_when_no_label_is_selected():
    model = build("srdl", request(top_k=0))
    sa = torch.rand(2, len(LABELS), 4, 4)
    assert torch.equal(model.erase(sa, torch.randn(2, len(LABELS))), sa)
    model_k1 = build("srdl", request(top_k=1))
    logits = torch.tensor([[0.0, 5.0, 0, 0, 0], [3.0, 0, 0, 0, 0]])
    erased = model_k1.erase(sa, logits)
    changed = [(b, c) for b in range(2) for c in range(len(LABELS)) if not torch.equal(erased[b, c], sa[b, c])]
    assert changed == [(0, 1), (1, 0)]


def test_srdl_adds_the_erased_loss_only_in_training():
    model = build("srdl", request())
    x, y = torch.randn(2, 3, 64, 64), torch.tensor(TABLE[:2], dtype=torch.float32)
    model.train()
    assert set(model.extra_losses(model(x), y)) == {"erased"}
    model.eval()
    assert model.extra_losses(model(x), y) == {}


def test_flat_attention_has_no_peak_to_erase():
    from engine.models.srdl import erase_peak_region

    sa = torch.full((4, 4), 0.3)
    assert torch.equal(erase_peak_region(sa, 0.5), sa)


def absent_attention_model(weight: float = 1.0):
    torch.manual_seed(0)
    return build("ms-cma", request(absent_attention=weight)).train()


def test_absent_attention_term_is_bce_on_absent_labels_through_the_attention_only():
    model = absent_attention_model()
    x = torch.randn(3, 3, 64, 64)
    targets = torch.zeros(3, len(LABELS))
    targets[:, 0] = 1                       # water present on every tile
    targets[1, 2] = float("nan")            # dock unknown on tile 1 (weak labels)
    out = model(x)
    paths = out.aux["attention_path_logits"]
    absent = targets == 0
    # summed over labels, mean over the 3 images, as the asymmetric loss: 14 of 15 known
    expected = torch.stack([F.softplus(y)[absent].sum() * 5 / 14 for y in paths]).mean()
    loss = model.extra_losses(out, targets)["absent_attention"]
    assert torch.allclose(loss, expected)
    loss.backward()
    for head in model.heads.values():  # the classifier keeps the main loss's training
        assert head.weight.grad is None and head.bias.grad is None
        assert float(head.cmt[0].weight.grad.abs().sum()) > 0
    every_label = model.extra_losses(model(x), torch.ones(3, len(LABELS)))
    assert float(every_label["absent_attention"].detach()) == 0.0


def test_absent_attention_path_gives_the_heads_own_logits():
    model = absent_attention_model().eval()
    head = model.heads["stride32"]
    feats = torch.randn(2, model.backbone.stage_outputs["stride32"][1], 4, 4)
    logits, _, attention_path = head(feats, model.label_embeddings)
    assert torch.allclose(logits, attention_path, atol=1e-5)  # Eq. 9-10 as a sum over locations


def test_absent_attention_term_moves_an_absent_labels_attention_off_its_evidence():
    model = absent_attention_model()
    x, targets = torch.randn(4, 3, 64, 64), torch.zeros(4, len(LABELS))
    targets[:, 0] = 1
    opt = torch.optim.SGD(model.parameters(), lr=0.5)

    def absent_logits() -> float:  # the attention-weighted logits of labels 1-4
        with torch.no_grad():
            return float(torch.stack(model(x).aux["attention_path_logits"]).mean(0)[:, 1:].mean())

    before = absent_logits()
    for _ in range(15):
        opt.zero_grad()
        model.extra_losses(model(x), targets)["absent_attention"].backward()
        opt.step()
    # the attention of the absent labels now sits where their own location logits are low
    assert absent_logits() < before - 0.05


def test_without_the_absent_attention_weight_cma_trains_on_the_papers_losses_only():
    model = absent_attention_model(0.0)
    out = model(torch.randn(2, 3, 64, 64))
    assert out.aux == {} and model.extra_losses(out, torch.zeros(2, len(LABELS))) == {}
    with pytest.raises(ModelFileError, match="absent_attention"):
        build("cma", request(absent_attention=-1.0))
