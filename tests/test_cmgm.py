"""CM-GM, mechanism by mechanism, on tiny inputs; then trained and used end to end."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.graph.label_graph import LabelGraph, label_sequence
from engine.models.cmgm import CMGM, CMGMConfig, Variant
from engine.models.cmgm.alignment import hinge_rank_loss
from engine.models.cmgm.rmam import (ResidualMultiAttention, assign_parts, distinct_parts,
                                     exclusive_part_loss, grouping_loss, peak_response_groups)
from engine.models.cmgm.sequence import credible_scores, label_sequences
from engine.models.output import ModelOutput

LABELS = ["water", "ship", "dock", "trees", "buildings"]
TABLE = np.array([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 0, 0, 1, 0], [0, 0, 0, 1, 1],
                  [1, 1, 1, 0, 1], [0, 0, 0, 1, 0]])


def tiny_cmgm(variant: str = "N-R-BiLSTM", feature_stride: int = 32) -> CMGM:
    torch.manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(len(LABELS), 12), dim=1)
    return CMGM(CMGMConfig(n_labels=len(LABELS), variant=variant, parts=3, channels=16,
                           feature_stride=feature_stride,
                           fc_hidden=8, embed_dim=16, lstm_hidden=16,
                           label_embeddings=emb.tolist(),
                           label_graph=LabelGraph.mine(LABELS, TABLE).to_json()))


# -- RMAM (Section 3.1) ---------------------------------------------------------------------
@pytest.mark.parametrize("normalise,residual", [(False, False), (True, False), (True, True),
                                                (False, True)])
def test_n_and_r_switches_compute_part_features_as_eq2_and_eq3(normalise, residual):
    rmam = ResidualMultiAttention(channels=4, parts=2, hidden=3, normalise=normalise,
                                  residual=residual)
    feats = torch.rand(1, 4, 3, 3)
    d = torch.rand(1, 2, 4)
    maps = torch.rand(1, 2, 3, 3)
    got = rmam.pooled_parts(feats, maps, d)[0]
    for n in range(2):
        mask = 1 + maps[0, n] if residual else maps[0, n]                 # Eq. 3: (1 + M_n)
        pooled = (feats[0] * mask).mean(dim=(1, 2))                       # sum_xy / hw
        if normalise:                                                     # Eq. 2: d_j / sum d
            pooled = pooled * d[0, n] / d[0, n].sum() * 4
        torch.testing.assert_close(got[0, n], pooled)


def test_part_attention_lights_where_its_channels_outrespond_the_other_parts():
    rmam = ResidualMultiAttention(channels=2, parts=2, hidden=2, normalise=True, residual=True)
    feats = torch.zeros(1, 2, 2, 2)
    feats[0, 0, 0, 0] = 4.0   # channel 0 fires top-left, channel 1 bottom-right
    feats[0, 1, 1, 1] = 4.0
    feats[0, :, 0, 1] = 4.0   # top-right: salient for both channels alike
    d = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # part 0 reads channel 0, part 1 channel 1
    with torch.no_grad():
        maps = rmam.attention(feats, d)[0].flatten(1)
    assert maps[0].argmax() == 0 and maps[1].argmax() == 3
    # what every part responds to alike lights no part more than an empty location does
    torch.testing.assert_close(maps[:, 1], maps[:, 2])
    assert float(maps.min()) > 0 and float(maps.max()) < 1


def test_competing_parts_share_a_location_and_a_lone_part_keeps_its_sigmoid():
    independent = ResidualMultiAttention(channels=3, parts=3, hidden=2, normalise=True,
                                         residual=True)
    competing = ResidualMultiAttention(channels=3, parts=3, hidden=2, normalise=True,
                                       residual=True, competing=True)
    feats = torch.zeros(1, 3, 1, 3)
    feats[0, 0, 0, 0] = 4.0               # left: part 0 alone responds
    feats[0, :2, 0, 1] = 4.0              # middle: parts 0 and 1 respond alike
    d = torch.eye(3)[None]                # part n reads channel n
    with torch.no_grad():
        independent.offset.fill_(1.0)
        competing.offset.fill_(1.0)
        lone = independent.attention(feats, d)[0, :, 0]
        shared = competing.attention(feats, d)[0, :, 0]                  # [N, w]
    assert float(shared[0, 0]) > 0.9 and float(lone[0, 0]) > 0.9
    # the two parts split the middle location; independent sigmoids light both fully
    assert float(shared[:2, 1].sum()) < 1.0 < float(lone[:2, 1].sum())
    torch.testing.assert_close(shared[0, 1], shared[1, 1])
    assert float(shared[:, 2].max()) < 0.1   # nothing responds: the null part keeps it dark


def test_attended_part_features_are_the_residual_ones_less_the_whole_tile():
    rmam = ResidualMultiAttention(channels=4, parts=2, hidden=3, normalise=True, residual=True)
    feats, maps, d = torch.rand(1, 4, 3, 3), torch.rand(1, 2, 3, 3), torch.rand(1, 2, 4)
    pooled, attended = rmam.pooled_parts(feats, maps, d)
    whole = feats.mean(dim=(2, 3))[:, None] * d * 4 / d.sum(-1, keepdim=True)
    torch.testing.assert_close(pooled - attended, whole)                 # Eq. 3: 1 + M_n
    dark = rmam.pooled_parts(feats, torch.zeros_like(maps), d)[1]
    assert float(dark.abs().max()) == 0.0       # a dark part carries no evidence of its own


def test_attended_evidence_keeps_the_part_loss_shaping_the_map_once_the_tile_is_known():
    """With R, V(P_n) holds the whole tile's evidence: once V is sure of a label, the
    part-label loss saturates and no longer moves the part map; "attended" keeps it."""
    rmam = ResidualMultiAttention(channels=2, parts=1, hidden=2, normalise=False, residual=True)
    feats = torch.zeros(1, 2, 4, 4)
    feats[0, 0] = 1.0                                   # label 0's evidence over the tile
    v = torch.nn.Linear(2, 1)
    with torch.no_grad():
        v.weight.copy_(torch.tensor([[6.0, 0.0]]))
        v.bias.fill_(-3.0)
    grads = []
    for evidence in (0, 1):                                 # 0: Eq. 3's P_n, 1: attended
        maps = torch.full((1, 1, 4, 4), 0.1, requires_grad=True)
        part = rmam.pooled_parts(feats, maps, torch.ones(1, 1, 2))[evidence]
        F.binary_cross_entropy_with_logits(v(part)[0, 0], torch.ones(1)).backward()
        grads.append(float(maps.grad.abs().sum()))
    assert grads[1] > 10 * grads[0] > 0


def test_an_unknown_part_map_kind_is_refused_with_the_choices():
    from engine.errors import ModelFileError

    with pytest.raises(ModelFileError, match="part_maps 'soft' is not one of independent, "
                                             "competing"):
        CMGM(CMGMConfig(n_labels=len(LABELS), part_maps="soft", channels=16,
                        label_graph=LabelGraph.mine(LABELS, TABLE).to_json()))
    with pytest.raises(ModelFileError, match="part_evidence 'local' is not one of residual, "
                                             "attended"):
        CMGM(CMGMConfig(n_labels=len(LABELS), part_evidence="local", channels=16,
                        label_graph=LabelGraph.mine(LABELS, TABLE).to_json()))
    with pytest.raises(ModelFileError, match="part_loss 'softmax' is not one of any, "
                                             "exclusive"):
        CMGM(CMGMConfig(n_labels=len(LABELS), part_loss="softmax", channels=16,
                        label_graph=LabelGraph.mine(LABELS, TABLE).to_json()))


def test_grouping_loss_prefers_compact_and_distinct_parts():
    compact = torch.full((1, 2, 8, 8), 0.01)
    compact[0, 0, 1, 1] = compact[0, 1, 6, 6] = 1.0
    diffuse = torch.full((1, 2, 8, 8), 0.5)
    same_place = torch.full((1, 2, 8, 8), 0.01)
    same_place[0, :, 1, 1] = 1.0
    assert grouping_loss(compact) < grouping_loss(diffuse)      # compactness (Dis)
    assert grouping_loss(compact) < grouping_loss(same_place)   # diversity (Div)


def test_peak_response_clustering_groups_channels_that_peak_together():
    feats = torch.zeros(4, 6, 5, 5)
    feats[:, :3, 0, 0] = 1.0   # channels 0-2 peak top-left on every image
    feats[:, 3:, 4, 4] = 1.0   # channels 3-5 bottom-right
    groups = peak_response_groups(feats, parts=2)
    assert len(set(groups[:3].tolist())) == 1 and len(set(groups[3:].tolist())) == 1
    assert groups[0] != groups[3]
    rmam = ResidualMultiAttention(channels=6, parts=2, hidden=4, normalise=True, residual=True)
    rmam.grouping.initialise(groups)
    d = rmam.grouping(torch.rand(1, 6))[0]        # part -> channel weights
    part = int(groups[0])
    assert bool((d[part, :3] > 0.9).all()) and bool((d[part, 3:] < 0.1).all())


def test_each_part_serves_the_label_it_predicts_and_a_label_its_strongest_part():
    part_logits = torch.tensor([[[0.1, 2.0], [3.0, 0.5], [1.0, 1.0]]])  # [B=1, N=3, C=2]
    assert assign_parts(part_logits).tolist() == [[1, 0]]


def test_two_labels_do_not_share_a_part_when_each_has_its_own():
    # part 0 predicts label 0 (5 > 4); label 1 responds more to part 0 than to part 1, but
    # part 1 predicts label 1: Eq. 1 gives it part 1. Label 2 has no part of its own and
    # takes the part that responds most to it.
    part_logits = torch.tensor([[[5.0, 4.0, 0.0], [0.0, 1.0, 0.5]]])    # [B=1, N=2, C=3]
    assert assign_parts(part_logits).tolist() == [[0, 1, 1]]


def test_while_training_every_present_label_gets_a_part_of_its_own():
    # no part predicts label 1, so Eq. 1 (test time) lends it part 0, label 0's own part
    part_logits = torch.tensor([[[5.0, 4.0, 3.0], [2.0, 1.0, 0.0], [0.0, 0.5, 2.0]]])
    assert assign_parts(part_logits).tolist() == [[0, 0, 2]]
    targets = torch.tensor([[1.0, 1.0, 0.0]])
    assert distinct_parts(part_logits, targets).tolist() == [[0, 1, -1]]
    assert distinct_parts(part_logits, torch.tensor([[0.0, 1.0, 1.0]])).tolist() == [[-1, 0, 2]]


def test_exclusive_part_loss_moves_a_shared_part_off_the_other_labels_evidence():
    """One part lit over airplane and apron satisfies the BCE over parts for both labels;
    the exclusive loss lowers that part on the apron (where V sees pavement) and raises
    it on the plane."""
    rmam = ResidualMultiAttention(channels=2, parts=2, hidden=2, normalise=False, residual=True)
    feats = torch.zeros(1, 2, 4, 4)
    feats[0, 0, :2] = 1.0                   # channel 0 (airplane evidence): top half
    feats[0, 1, 2:] = 1.0                   # channel 1 (pavement evidence): bottom half
    v = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        v.weight.copy_(torch.tensor([[4.0, 0.0], [0.0, 4.0]]))
    maps = torch.zeros(1, 2, 4, 4)
    maps[0, 0] = 0.9                                        # part 0: the whole tile
    maps[0, 1, 2:] = 0.2                                    # part 1: dim, on the apron
    maps.requires_grad_(True)
    attended = rmam.pooled_parts(feats, maps, torch.ones(1, 2, 2))[1]
    targets = torch.tensor([[1.0, 1.0]])
    any_part = F.binary_cross_entropy_with_logits(v(attended).amax(1), targets)
    loss = exclusive_part_loss(v(attended), targets)
    assert float(loss.detach()) > 0.1 and float(any_part.detach()) < float(loss.detach())
    loss.backward()
    assert float(maps.grad[0, 0, :2].mean()) < 0 < float(maps.grad[0, 0, 2:].mean())
    assert float(exclusive_part_loss(v(attended), torch.tensor([[1.0, 0.0]])).detach()) == 0.0


def test_exclusive_part_loss_has_finite_gradients_on_images_without_labels():
    logits = torch.randn(2, 3, 4, requires_grad=True)
    exclusive_part_loss(logits, torch.tensor([[0.0, 0, 0, 0], [1.0, 1, 0, 0]])).backward()
    assert bool(torch.isfinite(logits.grad).all())


def test_label_attention_is_v_per_location_weighted_by_its_parts_map_and_presence():
    model = tiny_cmgm().eval()
    with torch.no_grad():
        x = torch.randn(2, 3, 64, 64)
        out = model(x)
        feats = model.features(x)
        maps, parts, _ = model.rmam(feats)
        choice = assign_parts(model.classifier(parts))               # [B, C]
        local = model.location_logits(feats, maps, choice)           # [B, C, h, w]
        # Eq. 3's part feature of each label's part, before Eq. 2's channel weights
        weight = 1 + maps.gather(1, choice[..., None, None].expand(-1, -1, *maps.shape[-2:]))
        pooled = torch.einsum("bchw,blhw->blc", feats, weight) / maps[0, 0].numel()
        expected = model.classifier(pooled)                           # [B, C, C]
    # the locations' logits average to V's score of that feature (Eq. 1, 3)
    torch.testing.assert_close(local.mean(dim=(2, 3)),
                               torch.diagonal(expected, dim1=1, dim2=2), rtol=1e-4, atol=1e-5)
    # the part map matters: a location its part lights carries twice V's evidence (R)
    f = torch.rand(1, 16, 2, 2)
    lit = torch.zeros(1, 3, 2, 2)
    lit[0, 0, 0, 0] = 1.0
    ev = model.location_logits(f, lit, torch.zeros(1, len(LABELS), dtype=torch.long))
    cam = torch.einsum("lc,bchw->blhw", model.classifier.weight, f)
    torch.testing.assert_close(ev - model.classifier.bias[None, :, None, None],
                               cam * (1 + lit[:, :1]))
    p = torch.sigmoid(out.logits)[..., None, None]                   # presence (attention.py)
    torch.testing.assert_close(out.attention, p * torch.sigmoid(local))
    assert out.logits.shape == (2, len(LABELS))


def test_stride_16_features_give_parts_and_overlays_twice_as_fine_from_both_stages():
    model = tiny_cmgm(feature_stride=16).eval()
    x = torch.randn(2, 3, 64, 64)
    out = model(x)
    maps = out.aux["maps"]
    assert maps.shape[-2:] == out.attention.shape[-2:] == (4, 4)  # 64 px / 16
    assert tiny_cmgm().eval()(x).attention.shape[-2:] == (2, 2)   # the paper's stride 32
    # W1 reads the stride-16 map and the upsampled stride-32 map: both change F
    taps = model.backbone.forward_stages(x, ("stride16", "stride32"))
    w1 = model.reduce[0].weight                                    # [c, 16-ch + 32-ch, 1, 1]
    assert w1.shape[1] == taps["stride16"].shape[1] + taps["stride32"].shape[1]
    out.logits.sum().backward()
    assert w1.grad[:, :taps["stride16"].shape[1]].abs().sum() > 0
    assert w1.grad[:, taps["stride16"].shape[1]:].abs().sum() > 0


def test_a_feature_stride_other_than_16_or_32_is_refused_by_name():
    from engine.errors import ModelFileError

    with pytest.raises(ModelFileError, match="feature_stride 8 is not one of 16, 32"):
        tiny_cmgm(feature_stride=8)


# -- Cross-modal alignment (Section 3.3, Eq. 6) ----------------------------------------------
def test_hinge_rank_loss_is_zero_when_the_matched_label_wins_by_the_margin():
    g = torch.eye(3)                                    # label embeddings, orthogonal
    aligned = torch.eye(3)[None].clone()                # label l's feature = g_l: cos 1 vs 0
    targets = torch.tensor([[1.0, 1.0, 0.0]])
    assert float(hinge_rank_loss(aligned, g, targets, margin=0.5)) == 0.0
    close = aligned.clone()
    close[0, 0] = F.normalize(torch.tensor([1.0, 0.9, 0.0]), dim=0)  # label 0 near label 1
    loss = hinge_rank_loss(close, g, targets, margin=0.5)
    # pair (image, label 0): a=1 gives 0.5 - 0.743 + 0.669 > 0, a=2 gives 0.5 - 0.743 < 0;
    # pair (image, label 1) wins by more than the margin: 0. Mean over the two pairs.
    expected = (0.5 - 1 / np.sqrt(1.81) + 0.9 / np.sqrt(1.81)) / 2
    assert float(loss) == pytest.approx(expected, abs=1e-5)


def test_hinge_rank_loss_without_positive_labels_is_zero():
    assert float(hinge_rank_loss(torch.randn(2, 3, 4), torch.randn(3, 4), torch.zeros(2, 3))) == 0


# -- Label sequences and the credible-label predictor (Section 3.4) --------------------------
def test_label_sequence_follows_the_conditional_probabilities_of_a_hand_made_graph():
    # P(j | i): from airplane, pavement is likelier than buildings (the paper's Figure 10b)
    labels = ["airplane", "pavement", "buildings", "grass"]
    probs = torch.tensor([[1.0, 0.9, 0.6, 0.1],
                          [0.2, 1.0, 0.7, 0.3],
                          [0.1, 0.8, 1.0, 0.5],
                          [0.0, 0.4, 0.3, 1.0]])
    confidence = torch.tensor([[0.95, 0.5, 0.6, 0.2],    # airplane most confident
                               [0.1, 0.2, 0.3, 0.9]])    # grass most confident
    order = label_sequences(confidence, probs)
    assert [labels[i] for i in order[0]] == ["airplane", "pavement", "buildings", "grass"]
    assert [labels[i] for i in order[1]] == ["grass", "pavement", "buildings", "airplane"]
    for row, conf in zip(order, confidence):            # same as the graph module's version
        assert row.tolist() == label_sequence(conf.numpy(), probs.numpy())


def test_label_sequence_ties_go_to_the_more_confident_label():
    probs = torch.tensor([[1.0, 0.5, 0.5], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert label_sequences(torch.tensor([[0.9, 0.2, 0.4]]), probs).tolist() == [[0, 2, 1]]


def test_credible_labels_alone_are_positive_others_need_classifier_and_lstm_to_agree():
    p_cnn = torch.tensor([0.45, 0.45, 0.30, 0.30, 0.10, 0.10])
    p_lstm = torch.tensor([0.10, 0.90, 0.90, 0.10, 0.99, 0.10])
    positive = credible_scores(p_cnn, p_lstm, credible=0.4, candidate=0.2) >= 0.5
    # credible (> 0.4): positive whatever the LSTM says; candidate (0.2-0.4): only with the
    # LSTM; below the candidate threshold: never, even when the LSTM is sure
    assert positive.tolist() == [True, True, True, False, False, False]


def test_lstm_and_bilstm_variants_differ_in_direction():
    uni, bi = tiny_cmgm("N-R-LSTM"), tiny_cmgm("N-R-BiLSTM")
    assert uni.predictor.backward_lstm is None and bi.predictor.backward_lstm is not None
    feats = torch.randn(1, 4, 16)
    order = torch.tensor([[0, 1, 2, 3]])
    g = torch.randn(4, 16)
    changed = feats.clone()
    changed[0, 3] += 5.0                                   # the last label in the sequence
    first_uni = uni.predictor(feats, order, g)[0, 0], uni.predictor(changed, order, g)[0, 0]
    first_bi = bi.predictor(feats, order, g)[0, 0], bi.predictor(changed, order, g)[0, 0]
    assert first_uni[0] == first_uni[1]                    # a forward LSTM cannot look ahead
    assert first_bi[0] != first_bi[1]                      # the backward pass (Eq. 16) can


@pytest.mark.parametrize("name,expected", [("N-LSTM", (True, False, False)),
                                           ("N-R-LSTM", (True, True, False)),
                                           ("N-BiLSTM", (True, False, True)),
                                           ("N-R-BiLSTM", (True, True, True))])
def test_variant_names_set_the_switches(name, expected):
    v = Variant.parse(name)
    assert (v.normalise, v.residual, v.bidirectional) == expected


# -- The alternating schedule (Section 3.3) ---------------------------------------------------
@pytest.mark.parametrize("phase", ["features", "grouping", "alignment", "reasoning"])
def test_gradients_reach_only_the_parameter_group_of_the_schedule_step(phase):
    model = tiny_cmgm()
    model.train()
    model.set_phase(phase)
    bn = model.reduce[1]
    running_mean = bn.running_mean.clone()
    x = torch.randn(3, 3, 64, 64)
    y = torch.tensor(TABLE[:3], dtype=torch.float32)
    out: ModelOutput = model(x)
    loss = F.binary_cross_entropy_with_logits(out.logits, y) + sum(
        model.extra_losses(out, y).values())
    loss.backward()
    groups = model.parameter_groups()
    trained = {phase, "classifier"}  # V, the CNN predictor, learns in every step
    for name, params in groups.items():
        got = [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in params]
        if name in trained:
            assert all(got), f"{phase}: some of its {name} parameters got no gradient"
        else:
            assert not any(got), f"{phase} step reached the {name} parameters"
    # W1 is fixed outside its own step: its batch-norm statistics too
    assert torch.equal(bn.running_mean, running_mean) == (phase != "features")


def test_schedule_pretrains_the_cnn_then_alternates_then_trains_the_reasoning_module():
    model = tiny_cmgm()
    assert model.stage_epochs(12) == [5, 4, 3]           # 40 % / 35 % / the rest
    # one learning-rate schedule for the feature extractor, a fresh one for the LSTM
    assert model.training_stages(12) == [9, 3]
    phases = [model.phase_of(epoch, epoch * 3 + step, epochs=12)
              for epoch in range(12) for step in range(3)]
    assert phases[:15] == ["pretrain"] * 15
    assert phases[15:27] == ["features", "grouping", "alignment"] * 4
    assert phases[27:] == ["reasoning"] * 9
    # the grouping is clustered on the pre-trained CNN's features, before stage 1
    assert model.preparation_epoch(12) == 5
    # short runs keep one epoch for each of stages 1 and 2
    assert model.stage_epochs(2) == [0, 1, 1]
    assert model.stage_epochs(3) == [1, 1, 1]


def test_the_pretrain_step_trains_the_cnn_and_v_only():
    model = tiny_cmgm()
    model.train()
    model.set_phase("pretrain")
    out: ModelOutput = model(torch.randn(3, 3, 64, 64))
    y = torch.tensor(TABLE[:3], dtype=torch.float32)
    assert model.extra_losses(out, y) == {}               # the trainer's BCE on V alone
    F.binary_cross_entropy_with_logits(out.logits, y).backward()
    for name, params in model.parameter_groups().items():
        got = any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in params)
        assert got == (name in ("features", "classifier")), name


def test_the_trainer_runs_the_stages_and_clusters_after_the_cnn(tmp_path, monkeypatch):
    from conftest import DATA
    from engine.data.datasets import open_dataset
    from engine.progress import Reporter
    from engine.train.trainer import Trainer, TrainConfig

    seen: list[str] = []
    original, prepare = CMGM.set_phase, CMGM.prepare_from_data
    monkeypatch.setattr(CMGM, "set_phase", lambda self, p: (seen.append(p), original(self, p)))
    monkeypatch.setattr(CMGM, "prepare_from_data",
                        lambda self, x: (seen.append("cluster"), prepare(self, x)))
    cfg = TrainConfig(arch="cmgm", epochs=6, batch_size=256, image_px=64, device="cpu",
                      freeze_backbone=True, pretrained=False, patience=6,
                      arch_config={"pretrain_fraction": 0.34, "alternating_fraction": 0.5,
                                   "channels": 16, "lstm_hidden": 16, "embed_dim": 16,
                                   "fc_hidden": 8})
    trainer = Trainer(cfg, [open_dataset(f"ucmerced:{DATA / 'ucmerced_mini'}")], tmp_path,
                      Reporter(json_lines=True, stream=open(os.devnull, "w")))
    trainer.run()
    # one step per epoch: two CNN epochs, the clustering, then the W1 / grouping / W2
    # cycle runs on across epochs of one step each, then the LSTM (the arch_config's
    # fractions reached the model)
    assert seen[:3] == ["pretrain", "pretrain", "cluster"]
    assert sorted(seen[3:6]) == ["alignment", "features", "grouping"]
    assert seen[6:] == ["reasoning"]
    model = trainer.model   # afterwards, everything the optimiser held is trainable again
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith("backbone"))
    assert not any(p.requires_grad for p in model.backbone.parameters())


def test_frozen_backbone_stays_frozen_in_every_phase():
    model = tiny_cmgm()
    model.backbone.requires_grad_(False)
    for phase in ("pretrain", "features", "grouping", "alignment", "reasoning"):
        model.set_phase(phase)
        assert not any(p.requires_grad for p in model.backbone.parameters())


# -- End to end -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from engine.cli import main
    from conftest import DATA

    out = tmp_path_factory.mktemp("cmgm") / "model"
    code = main(["train", "--arch", "cmgm", "--variant", "N-R-BiLSTM", "--dataset",
                 f"ucmerced:{DATA / 'ucmerced_mini'}", "--out", str(out), "--epochs", "2",
                 "--image-size", "64", "--batch-size", "16", "--freeze-backbone",
                 "--json-progress"])
    assert code == 0
    return out


def test_cmgm_trains_through_the_cli_and_records_its_variant(trained):
    spec = json.loads((trained / "model.json").read_text())
    assert spec["arch"] == "cmgm" and spec["arch_config"]["variant"] == "N-R-BiLSTM"
    losses = [e["loss"] for e in spec["training"]["history"]]
    assert len(losses) == 2 and all(np.isfinite(losses))
    # each epoch records its terms: BCE on V's logits and the stage's own losses, whose
    # sum is the loss the optimiser saw
    terms = [e["loss_terms"] for e in spec["training"]["history"]]
    assert "bce" in terms[0] and len(terms[0]) > 1
    assert all(sum(t.values()) == pytest.approx(loss) for t, loss in zip(terms, losses))
    # epoch 1 is the alternating stage, epoch 2 the predictor's: only the finished model
    # (stage 2) can be kept, and its learning rate restarts at the top of the schedule
    assert spec["training"]["best_epoch"] == 1
    assert spec["training"]["history"][1]["lr"] == pytest.approx(1e-3)
    assert spec["metrics"]["val"]["n_images"] > 0


def test_cmgm_annotates_with_per_label_attention(trained, tmp_path, run_cli):
    import rasterio
    from conftest import SAMPLE

    res = run_cli("annotate", SAMPLE, "--out", tmp_path / "s.gpkg", "--model", trained,
                  "--allow-gsd-mismatch")
    assert res.code == 0, res.err
    attention = next((tmp_path / "s_attention").glob("*.tif"))
    with rasterio.open(attention) as ds:
        assert ds.count == 17 and ds.descriptions[0] == "airplane"


def test_unknown_variant_is_refused_with_the_choices(tmp_path, run_cli):
    from conftest import DATA

    res = run_cli("train", "--arch", "cmgm", "--variant", "X-GRU", "--dataset",
                  f"ucmerced:{DATA / 'ucmerced_mini'}", "--out", tmp_path / "m", "--epochs", "2")
    assert res.code == 2
    assert "N-R-BiLSTM" in res.err and not (tmp_path / "m" / "model.json").exists()


def test_single_epoch_training_is_refused_because_cmgm_has_two_stages(tmp_path, run_cli):
    from conftest import DATA

    res = run_cli("train", "--arch", "cmgm", "--dataset", f"ucmerced:{DATA / 'ucmerced_mini'}",
                  "--out", tmp_path / "m", "--epochs", "1", "--image-size", "64")
    assert res.code == 2 and "--epochs 2" in res.err


def test_alternating_schedule_trains_under_torchrun_with_two_processes(tmp_path):
    import subprocess
    import sys

    from conftest import DATA, ROOT

    out = tmp_path / "ddp"
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "-m", "engine.cli", "train", "--arch", "cmgm", "--dataset",
         f"ucmerced:{DATA / 'ucmerced_mini'}", "--out", str(out), "--epochs", "2",
         "--device", "cpu", "--image-size", "64", "--batch-size", "16", "--freeze-backbone"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    spec = json.loads((out / "model.json").read_text())
    # parameter groups switched off in a step are unused there: DDP must accept that
    assert spec["training"]["world_size"] == 2 and spec["training"]["best_epoch"] == 1
