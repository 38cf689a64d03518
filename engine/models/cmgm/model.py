"""CM-GM (Li et al. 2022, "Multi-Label Aerial Image Classification via Residual
Multi-Attention CNN-LSTM and Label Graph Mining"; shared/papers/cm-gm_li2022...).

Forward pass (Figure 3):
1. F = W1 * X: the backbone's feature map, then a 1x1 convolution to ``channels`` (with
   batch normalisation and ReLU). "W1" in this module is the backbone and that layer.
   ``feature_stride`` 32 (the paper's, ResNet-50's last stage: 8 x 8 locations on a
   256 px tile) or 16: X is then the backbone's stride-16 map with its stride-32 map
   bilinearly upsampled beside it (16 x 16 locations), so that parts and the overlay
   can separate objects a few metres apart (the attention issue: "map resolution that
   suits"; docs/benchmarks.md says what it gave).
2. The classifier V (a linear layer on the average-pooled F) gives the CNN's label
   scores, p_cnn. It is V of Eq. 1 and the "pre-trained CNN" of Section 3.4, trained with
   BCE in every step of stages 0 and 1 (in stage 0 with W1, as a plain classifier).
3. RMAM (rmam.py): N parts -> maps M [B, N, h, w] and features P [B, N, c] (Eq. 2/3 by
   the variant's N and R switches); each part is given the label V predicts for it, and
   a label takes the strongest of its own parts (Eq. 1; rmam.assign_parts).
   ``part_evidence`` says which part feature Eq. 1 and the part-label loss read:
   "residual" (the paper's P_n of Eq. 3, the default) or "attended" (our option: the part
   feature pooled by M_n alone, as MA-CNN classifies its parts; the LSTM still reads
   Eq. 3's P_n). With R, V(P_n) = V(mean F) + W mean(F M_n): once V knows the tile's
   labels from the whole tile, the part-label loss saturates (its gradient, p - y, is
   near 0) and stops moving the part maps, while the grouping loss (compactness,
   diversity) is lowest for dark maps; the trained parts of labels other than the
   dominant one stayed dark (rmam.py). With "attended", V(mean F M_n) = mean_xy M_n(x, y)
   v_l(x, y) + b_l, v_l being V's evidence for label l at (x, y): the loss keeps raising
   M_n where its label's evidence is and lowering it where an absent label's evidence
   is. Measured (recipes/cmgm-attended.toml, seed 0): the assigned part alone points at
   its NWPU object 0.48 of the time (residual: 0.42), airplanes 0.85 (0.50), test mAP
   0.974; but where one part's channels respond most over the whole tile, every label
   takes that part (airplane80, harbor33; docs/benchmarks.md). ``part_loss`` "exclusive"
   (our option) adds rmam.exclusive_part_loss: while training each present label gets a
   part of its own and that part's V scores should tell its label from the image's other
   labels (Eq. 1's one label per part; MA-CNN's softmax part loss).
4. The label-graph GCN (alignment.py, Eq. 4/5) embeds the labels' text vectors; W2 maps
   each label's part feature into that space (P' = W2 P, Eq. 15).
5. Label sequences (sequence.py): from the most confident label by p_cnn along the
   highest conditional probabilities; the (Bi-)LSTM runs over P' in that order and
   scores every label. Our reading of "the LSTM completes the sequence": the paper feeds
   the credible labels first and lets the LSTM predict the rest; here the sequence holds
   every label, the credible (most confident) ones first, and the LSTM scores each step,
   so the labels after the credible ones are the ones it "completes".
6. At test time the credible-label rule (sequence.credible_scores) merges p_cnn and the
   LSTM's scores into the model's probabilities. While training, ``logits`` are V's, so
   the trainer's BCE trains the classifier; the other losses come from ``extra_losses``.

Training (Sections 3.1, 3.3, 3.4 and 4.1.2; ``schedule_step`` is called by the trainer
each step), three stages (``stage_epochs``); the learning-rate schedule runs once over
stages 0 and 1 and restarts for stage 2 (``training_stages``):
- stage 0, the first ``pretrain_fraction`` of the epochs: the "pre-trained CNN" of
  Section 3.4, trained as a plain multi-label classifier: W1 (the backbone and its 1x1
  layer) and V with the trainer's BCE on V's logits, every step ("pretrain"). MA-CNN, whose
  grouping RMAM takes, clusters the channels of a CNN trained on the task, and CM-GM's V
  is "the pre-trained CNN predictor" (Eq. 1, Section 3.4). Without this stage W1 learned in
  one step of three of stage 1 only and was frozen after it: the fine-tuned model scored
  val OF1 / CF1 / mAP 0.776 / 0.676 / 0.795, below its 5-epoch frozen-backbone run.
- stage 1, the next ``alternating_fraction`` of the epochs (at least one): the channel
  grouping is initialised from peak-response clustering of the trained F
  (``prepare_from_data``, which the trainer calls before this stage's first epoch:
  ``preparation_epoch``), then steps cycle through the three groups of Section 3.3, each
  trained with the others fixed:
    "features"  W1: BCE (trainer) + part-label BCE (Eq. 1's response) + grouping loss
    "grouping"  the channel-grouping FCs (and map sharpness): grouping + part-label BCE
    "alignment" W2 + the GCN W_G: the hinge rank loss (Eq. 6)
  The classifier V learns from the trainer's BCE in every step.
- stage 2, the remaining epochs (at least one): the convolutional layers (backbone, W1),
  grouping and W2 frozen (batch-norm statistics too); the "reasoning" module (the LSTM and
  its label mapping, with the classifier V) learns with BCE on its scores. The paper uses
  SGD for the CNN and a fresh Adam run for the reasoning module; here the trainer's AdamW
  serves every stage, and only stage-2 epochs can be kept as the best model.
W1's 1x1 layer is a learned layer with the default random initialisation: an earlier
version set it to pass on the 512 backbone channels of widest spatial spread, so that the
clustered channels were trained features, but with a frozen backbone W1 then had less to
work with (5-epoch val OF1 / CF1 / mAP 0.757 / 0.640 / 0.761 against 0.785 / 0.700 /
0.843 learned, same code otherwise; a PCA initialisation gave 0.770 / 0.599 / 0.847).

Attention for the analyst: for each label l, sigmoid of V's logit for l at each location
of F, weighted by the attention of l's assigned part (Eq. 1): (1 + M_n) for R (Eq. 3),
M_n otherwise (``location_logits``); a fixed curve, weighted by the label's probability
(engine/models/attention.py). Averaged over the locations it is V's score of Eq. 3's part
feature. It shows where V finds the label, lit more inside its part. Measured by
benchmarks/attention_localisation.py on NWPU VHR-10 (pointing; minus the absent-label map):
- on out/ft/cmgm-r2 (schedule restarted at stage 1), only the map changed: V per location
  with Eq. 2's channel weights d_j / sum d as well, which keep only part n's share of the
  channels, 0.47 (+0.22; airplane 0.49); this map, without them, 0.61 (+0.36; airplane
  0.76); V's class activation map without the part (not RMAM's) 0.62 (+0.39);
- on out/ft/cmgm-r3 (recipes/cmgm.toml as now): this map 0.67 (+0.49); the assigned part
  map M_n alone 0.27, below the crop centre's 0.41 (0.47, +0.17, on an earlier 5-epoch
  model).
Cars and ships stay near the crop-centre baseline with every one of these (0.20-0.28).
The part maps themselves are drawn by benchmarks/cmgm_attention_figures.py
(docs/cmgm_attention.png).

Defaults are the paper's where it gives them (tau 0.4, hidden and embedding size 512,
credible threshold 0.4); choices where it is silent are in each module's docstring:
N parts = number of labels, c = 512, FC hidden 128, candidate threshold 0.2.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.errors import ModelFileError
from engine.graph.label_graph import CMGM_TAU, LabelGraph
from engine.models.attention import presence_weighted
from engine.models.backbones import build_backbone
from engine.models.cmgm.alignment import (MARGIN, CrossModalAlignment, LabelGraphEncoder,
                                          hinge_rank_loss)
from engine.models.cmgm.rmam import (ResidualMultiAttention, assign_parts,
                                     exclusive_part_loss, grouping_loss, peak_response_groups)
from engine.models.cmgm.sequence import (CANDIDATE, CREDIBLE, SequencePredictor,
                                         credible_scores, label_sequences)
from engine.models.feature_stride import stride_channels, stride_features
from engine.models.gcn import attach_label_embeddings, label_adjacency
from engine.models.output import ModelOutput

VARIANTS = ("N-LSTM", "N-R-LSTM", "N-BiLSTM", "N-R-BiLSTM")
DEFAULT_VARIANT = "N-R-BiLSTM"
PRETRAIN = "pretrain"
PHASES = ("features", "grouping", "alignment")
REASONING = "reasoning"
PART_MAPS = ("independent", "competing")
PART_EVIDENCE = ("residual", "attended")
PART_LOSS = ("any", "exclusive")


@dataclass(frozen=True)
class Variant:
    normalise: bool
    residual: bool
    bidirectional: bool

    @classmethod
    def parse(cls, name: str) -> "Variant":
        """'N-R-BiLSTM' -> normalise, residual, Bi-LSTM (also R-LSTM, LSTM, ... )."""
        *switches, predictor = name.split("-")
        if predictor not in ("LSTM", "BiLSTM") or not set(switches) <= {"N", "R"} \
                or len(set(switches)) != len(switches):
            raise ModelFileError(f"unknown CM-GM variant '{name}'; use one of "
                                 f"{', '.join(VARIANTS)} (N: channel-wise normalisation, "
                                 "R: residual attention)")
        return cls("N" in switches, "R" in switches, predictor == "BiLSTM")


@dataclass
class CMGMConfig:
    n_labels: int
    in_bands: int = 3
    backbone: str = "efficientnet_lite0"
    pretrained: bool = False
    variant: str = DEFAULT_VARIANT
    parts: int | None = None           # N attention parts; default: one per label
    feature_stride: int = 32           # F's stride: 32 (the paper's) or 16 (step 1 above)
    part_maps: str = "independent"     # or "competing": parts share each location (rmam.py)
    part_evidence: str = "residual"    # or "attended": what Eq. 1 and the part loss read
    part_loss: str = "any"             # or "exclusive": each label's part tells it apart
    channels: int = 512                # c, the width of F = W1 * X
    fc_hidden: int = 128               # hidden width of each part's grouping FC
    embed_dim: int = 512               # label-embedding size (paper: 512)
    lstm_hidden: int = 512             # LSTM hidden size (paper: 512)
    tau: float = CMGM_TAU              # label-graph threshold (Eq. 4)
    margin: float = MARGIN             # hinge rank loss margin (Eq. 6)
    credible: float = CREDIBLE
    candidate: float = CANDIDATE
    grouping_weight: float = 1.0
    pretrain_fraction: float = 0.4     # share of the epochs in stage 0 (the CNN alone)
    alternating_fraction: float = 0.35  # share of the epochs in stage 1
    label_embeddings: list | None = None
    label_graph: dict | None = None


class CMGM(nn.Module):
    # its probabilities encode the credible-label rule: the trainer keeps thresholds at 0.5
    OWN_DECISION_RULE = True

    def __init__(self, cfg: CMGMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.variant = Variant.parse(cfg.variant)
        c, n_labels = cfg.channels, cfg.n_labels
        self.backbone = build_backbone(cfg.backbone, cfg.in_bands, cfg.pretrained)
        self.reduce = nn.Sequential(nn.Conv2d(self._input_channels(), c, 1, bias=False),
                                    nn.BatchNorm2d(c), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(c, n_labels)                              # V
        if cfg.part_maps not in PART_MAPS:
            raise ModelFileError(f"cmgm part_maps '{cfg.part_maps}' is not one of "
                                 f"{', '.join(PART_MAPS)}")
        if cfg.part_evidence not in PART_EVIDENCE:
            raise ModelFileError(f"cmgm part_evidence '{cfg.part_evidence}' is not one of "
                                 f"{', '.join(PART_EVIDENCE)}")
        if cfg.part_loss not in PART_LOSS:
            raise ModelFileError(f"cmgm part_loss '{cfg.part_loss}' is not one of "
                                 f"{', '.join(PART_LOSS)}")
        self.rmam = ResidualMultiAttention(c, cfg.parts or n_labels, cfg.fc_hidden,
                                           self.variant.normalise, self.variant.residual,
                                           competing=cfg.part_maps == "competing")
        attach_label_embeddings(self, cfg.label_embeddings, n_labels)
        adjacency = label_adjacency(cfg.label_graph, n_labels, cfg.tau)
        probs = torch.tensor(LabelGraph.from_json(cfg.label_graph).probs, dtype=torch.float32)
        self.register_buffer("conditional_probs", probs, persistent=False)
        self.gcn = LabelGraphEncoder(self.label_embeddings.shape[1], cfg.embed_dim, adjacency)
        self.alignment = CrossModalAlignment(c, cfg.embed_dim)                # W2
        self.predictor = SequencePredictor(cfg.embed_dim, cfg.lstm_hidden, cfg.embed_dim,
                                           n_labels, self.variant.bidirectional)
        self.phase: str | None = None
        self._schedulable: set[int] | None = None

    def _input_channels(self) -> int:
        """Channels of X, the backbone's map(s) W1's 1x1 layer reads (``feature_stride``)."""
        return stride_channels(self.backbone, self.cfg.feature_stride, "cmgm",
                               self.cfg.backbone)

    # -- forward ------------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """F = W1 * X (X: the stride-32 map, or at stride 16 the stride-16 map with the
        stride-32 map upsampled beside it; engine/models/feature_stride.py)."""
        return self.reduce(stride_features(self.backbone, x, self.cfg.feature_stride))

    def forward(self, x: torch.Tensor) -> ModelOutput:
        feats = self.features(x)
        cnn_logits = self.classifier(feats.mean(dim=(2, 3)))
        maps, parts, attended = self.rmam(feats)
        evidence = attended if self.cfg.part_evidence == "attended" else parts
        part_logits = self.classifier(evidence)                               # Eq. 1: V(P_n)
        choice = assign_parts(part_logits)                                    # [B, C]
        label_parts = parts.gather(1, choice[..., None].expand(-1, -1, parts.shape[-1]))
        aligned = self.alignment(label_parts)                                 # Eq. 15
        label_space = self.gcn(self.label_embeddings)                         # Eq. 5
        order = lstm_logits = None
        if not (self.training and self.phase in (PRETRAIN, *PHASES)):  # no loss reads it
            order = label_sequences(torch.sigmoid(cnn_logits.detach()), self.conditional_probs)
            lstm_logits = self.predictor(aligned, order, label_space)
        with torch.no_grad():  # the analyst's map: no gradient, no graph kept in training
            attention = torch.sigmoid(self.location_logits(feats, maps, choice))
        if self.training:
            logits = cnn_logits
        else:
            q = credible_scores(torch.sigmoid(cnn_logits.float()),
                                torch.sigmoid(lstm_logits.float()),
                                self.cfg.credible, self.cfg.candidate)
            logits = torch.logit(q, eps=1e-6)
        aux = {"cnn_logits": cnn_logits, "lstm_logits": lstm_logits, "maps": maps,
               "part_choice": choice,
               "part_logits": part_logits, "aligned": aligned,
               "label_space": label_space, "order": order}
        return ModelOutput(logits=logits, attention=presence_weighted(attention.detach(), logits),
                           aux=aux)

    def location_logits(self, feats: torch.Tensor, maps: torch.Tensor,
                        choice: torch.Tensor) -> torch.Tensor:
        """[B, C, h, w]: V's logit for label l at each location, weighted by the attention of
        l's assigned part (Eq. 1): (1 + M_n) for R (Eq. 3), M_n otherwise. Averaged over the
        locations it is V of Eq. 3's part feature before Eq. 2's channel weights d_j / sum d:
        those weights keep only part n's share of the channels, and V's evidence restricted
        to them pointed at NWPU objects 0.47 of the time against 0.61 without them (same
        model; module docstring)."""
        weight = 1 + maps if self.variant.residual else maps                 # [B, N, h, w]
        weight = weight.gather(1, choice[..., None, None].expand(-1, -1, *maps.shape[-2:]))
        local = torch.einsum("lc,bchw->blhw", self.classifier.weight, feats)
        return local * weight + self.classifier.bias[None, :, None, None]

    # -- training -----------------------------------------------------------------------
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """The parameters each step of the schedule trains."""
        return {"features": [*self.backbone.parameters(), *self.reduce.parameters()],
                "grouping": list(self.rmam.parameters()),
                "alignment": [*self.alignment.parameters(), *self.gcn.parameters()],
                "classifier": list(self.classifier.parameters()),
                REASONING: list(self.predictor.parameters())}

    def stage_epochs(self, epochs: int) -> list[int]:
        """Epochs of stages 0, 1 and 2 (the CNN; W1 / grouping / W2 in turn; the LSTM
        predictor). Stages 1 and 2 get at least one epoch each, stage 0 what is left of
        its share."""
        if epochs < 2:
            raise ModelFileError("cmgm trains in stages (the CNN, then W1 / grouping / W2 in "
                                 "turn, then the LSTM predictor): use --epochs 2 or more")
        first = min(epochs - 2, round(self.cfg.pretrain_fraction * epochs))
        second = min(epochs - 1 - first, max(1, round(self.cfg.alternating_fraction * epochs)))
        return [first, second, epochs - first - second]

    def training_stages(self, epochs: int) -> list[int]:
        """The learning-rate stages (the trainer restarts the schedule at each and keeps the
        best epoch of the last): the feature extractor, stages 0 and 1 in one schedule, as
        the paper trains it in one run whose rate falls until validation converges; then
        the reasoning module, a fresh run (Section 4.1.2). Restarting the rate at stage 1
        as well threw the trained CNN off: val mAP 0.967 after stage 0, 0.925 after stage
        1's first epoch (out/ft/cmgm-r2)."""
        first, second, third = self.stage_epochs(epochs)
        return [first + second, third]

    def preparation_epoch(self, epochs: int) -> int:
        """The channel grouping is clustered on F after the CNN's stage (Section 3.1)."""
        return self.stage_epochs(epochs)[0]

    def phase_of(self, epoch: int, step: int, epochs: int) -> str:
        """``step`` counts from the start of training, so the cycle runs on across epochs
        (an epoch of one or two steps still visits every group in turn)."""
        first, second, _ = self.stage_epochs(epochs)
        if epoch < first:
            return PRETRAIN
        return PHASES[step % 3] if epoch < first + second else REASONING

    def set_phase(self, phase: str) -> None:
        """Only ``phase``'s parameters take gradients (among those the trainer trains), and
        the batch-norm statistics of W1 move only in W1's own step."""
        if self._schedulable is None:  # parameters the optimiser holds (not frozen ones)
            self._schedulable = {id(p) for p in self.parameters() if p.requires_grad}
        groups = self.parameter_groups()
        # stage 0 trains W1 as the features step does, without the grouping's losses
        active = {id(p) for p in groups["features" if phase == PRETRAIN else phase]}
        active |= {id(p) for p in groups["classifier"]}  # V learns in every step
        for p in self.parameters():
            p.requires_grad_(id(p) in active and id(p) in self._schedulable)
        learning_w1 = phase in (PRETRAIN, "features")
        self.reduce.train(learning_w1)
        backbone_trained = any(id(p) in self._schedulable for p in self.backbone.parameters())
        self.backbone.train(learning_w1 and backbone_trained)
        self.phase = phase

    def schedule_step(self, epoch: int, step: int, epochs: int) -> None:
        self.set_phase(self.phase_of(epoch, step, epochs))

    def end_schedule(self) -> None:
        """After training: every parameter the optimiser held trainable again."""
        if self._schedulable is not None:
            for p in self.parameters():
                p.requires_grad_(id(p) in self._schedulable)
        self._schedulable, self.phase = None, None

    def extra_losses(self, out: ModelOutput, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """The losses of the current phase (the trainer adds BCE on V's logits)."""
        a = out.aux
        if self.phase in ("features", "grouping"):
            losses = {"grouping": self.cfg.grouping_weight * grouping_loss(a["maps"].float()),
                      "part_bce": F.binary_cross_entropy_with_logits(
                          a["part_logits"].amax(1).float(), targets)}
            if self.cfg.part_loss == "exclusive":
                losses["part_exclusive"] = exclusive_part_loss(a["part_logits"], targets)
            return losses
        if self.phase == "alignment":
            return {"alignment": hinge_rank_loss(a["aligned"].float(), a["label_space"].float(),
                                                 targets, self.cfg.margin)}
        if self.phase == REASONING:
            return {"lstm_bce": F.binary_cross_entropy_with_logits(
                a["lstm_logits"].float(), targets)}
        return {}

    @torch.no_grad()
    def prepare_from_data(self, images: torch.Tensor) -> None:
        """Initialise from training images (Section 3.1): the channel grouping from
        peak-response clustering of F, then each part map's offset and sharpness."""
        was_training = self.training
        self.eval()
        feats = self.features(images)
        self.rmam.grouping.initialise(peak_response_groups(feats, self.rmam.kappa.numel()))
        self.rmam.calibrate(feats)
        self.train(was_training)
