"""Architecture registry: ``build(arch, request)`` makes any model the engine knows.

Each entry names the architecture, a one-line description, the paper it implements, a
builder taking a :class:`BuildRequest` (the model.json fields a model is built from), and
whether it needs the label graph and label text embeddings (the trainer computes those
before building such a model).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # the registry is read without torch (tilelabel models list)
    from torch import nn

from engine.errors import ModelFileError, TileLabelError

RESNETS = ("resnet50", "resnet101")


@dataclass(frozen=True)
class BuildRequest:
    arch_config: dict[str, Any]
    n_labels: int
    in_bands: int
    pretrained: bool = False
    label_embeddings: list[list[float]] | None = None
    label_graph: dict[str, Any] | None = None


@dataclass(frozen=True)
class Architecture:
    name: str
    description: str
    paper: str
    builder: Callable[[BuildRequest], nn.Module]
    needs_label_embeddings: bool = False
    options: tuple[str, ...] = ()  # the arch_config keys its builder reads, beside COMMON


# arch_config keys the trainer writes itself (band_groups: K-Branch's, from the data)
COMMON_OPTIONS = ("backbone", "band_groups")
CMGM_OPTIONS = ("variant", "parts", "feature_stride", "part_maps", "part_evidence",
                "part_loss", "channels", "fc_hidden", "embed_dim", "lstm_hidden", "tau",
                "margin", "credible", "candidate", "grouping_weight", "pretrain_fraction",
                "alternating_fraction")  # CMGMConfig's fields a recipe may set


def _gap_linear(r: BuildRequest, default_backbone: str = "efficientnet_lite0") -> nn.Module:
    from engine.models.gap_linear import GapLinear, GapLinearConfig

    return GapLinear(GapLinearConfig(
        n_labels=r.n_labels, in_bands=r.in_bands, pretrained=r.pretrained,
        backbone=r.arch_config.get("backbone", default_backbone),
        backbone_weights=r.arch_config.get("backbone_weights"),
        dropout=float(r.arch_config.get("dropout", 0.2))))


def _resnet(r: BuildRequest) -> nn.Module:
    if r.arch_config.get("backbone", "resnet50") not in RESNETS:
        raise ModelFileError(f"the resnet baseline takes --backbone {' or '.join(RESNETS)}")
    return _gap_linear(r, "resnet50")


def _mlgcn(r: BuildRequest) -> nn.Module:
    from engine.models.mlgcn import MLGCN, MLGCNConfig

    return MLGCN(MLGCNConfig(n_labels=r.n_labels, in_bands=r.in_bands, pretrained=r.pretrained,
                             backbone=r.arch_config.get("backbone", "efficientnet_lite0"),
                             label_embeddings=r.label_embeddings, label_graph=r.label_graph))


def _deeplift(r: BuildRequest) -> nn.Module:
    from engine.models.deeplift import DEEPLIFT_TAU, DeepLift, DeepLiftConfig

    return DeepLift(DeepLiftConfig(
        n_labels=r.n_labels, in_bands=r.in_bands, pretrained=r.pretrained,
        backbone=r.arch_config.get("backbone", "efficientnet_lite0"),
        variant=r.arch_config.get("variant", "agcn"),
        tau=float(r.arch_config.get("tau", DEEPLIFT_TAU)),
        label_loss=float(r.arch_config.get("label_loss", 0.0)),
        feature_stride=int(r.arch_config.get("feature_stride", 32)),
        label_embeddings=r.label_embeddings, label_graph=r.label_graph))


def _cma(r: BuildRequest, multi_scale: bool = False) -> nn.Module:
    from engine.models.cma import CMA, CMAConfig

    return CMA(CMAConfig(n_labels=r.n_labels, in_bands=r.in_bands, pretrained=r.pretrained,
                         backbone=r.arch_config.get("backbone", "efficientnet_lite0"),
                         multi_scale=multi_scale, label_graph=r.label_graph,
                         absent_attention=float(r.arch_config.get("absent_attention", 0.0))))


def _srdl(r: BuildRequest) -> nn.Module:
    from engine.models.srdl import ALPHA, TOP_K, SRDL, SRDLConfig

    return SRDL(SRDLConfig(n_labels=r.n_labels, in_bands=r.in_bands, pretrained=r.pretrained,
                           backbone=r.arch_config.get("backbone", "efficientnet_lite0"),
                           top_k=int(r.arch_config.get("top_k", TOP_K)),
                           alpha=float(r.arch_config.get("alpha", ALPHA)),
                           label_embeddings=r.label_embeddings))


def _cmgm(r: BuildRequest) -> nn.Module:
    from dataclasses import fields

    from engine.models.cmgm import CMGM, CMGMConfig

    given = {"n_labels", "in_bands", "pretrained", "label_embeddings", "label_graph"}
    settings = {f.name: r.arch_config[f.name] for f in fields(CMGMConfig)
                if f.name in r.arch_config and f.name not in given}
    return CMGM(CMGMConfig(n_labels=r.n_labels, in_bands=r.in_bands, pretrained=r.pretrained,
                           label_embeddings=r.label_embeddings, label_graph=r.label_graph,
                           **settings))


def _kbranch(r: BuildRequest) -> nn.Module:
    from engine.band_groups import band_groups
    from engine.models.kbranch import PATCHES, BranchInput, KBranch, KBranchConfig

    groups = band_groups(r.arch_config)
    if groups is None:
        raise ModelFileError("a kbranch model needs 'band_groups' in arch_config (written by "
                             "'tilelabel train --arch kbranch'); this model.json has none")
    return KBranch(KBranchConfig(
        n_labels=r.n_labels, patches=int(r.arch_config.get("patches", PATCHES)),
        groups=[BranchInput(g.name, g.gsd_m, len(g.bands), g.px) for g in groups]))


ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    Architecture("gap-linear",
                 "baseline: backbone + global average pooling + linear head; CAM attention",
                 "Zhou et al. 2016, Learning Deep Features for Discriminative Localization (CAM)",
                 _gap_linear, options=("backbone_weights", "dropout")),
    Architecture("resnet", "baseline: ResNet-50/101 + global average pooling + linear head",
                 "He et al. 2016, Deep Residual Learning for Image Recognition", _resnet,
                 options=("backbone_weights", "dropout")),
    Architecture("mlgcn", "baseline: GCN over the label graph makes one classifier per label",
                 "Chen et al. 2019, Multi-Label Image Recognition with Graph Convolutional "
                 "Networks (ML-GCN)", _mlgcn, needs_label_embeddings=True),
    Architecture("deeplift", "label-specific LIFT maps A = L·F from AGCN/RGCN label "
                 "re-embeddings, channel attention (arch_config variant: agcn | rgcn)",
                 "Li et al. 2022, Deep-LIFT: label-specific feature learning "
                 "(shared/papers/deep-lift_li2022...)", _deeplift, needs_label_embeddings=True,
                 options=("variant", "tau", "label_loss", "feature_stride")),
    Architecture("cma", "cross-modality attention: ASGE label embeddings guide one "
                 "attention map per label", "You et al. 2020, Cross-Modality Attention with "
                 "Semantic Graph Embedding (shared/papers/cma_you2020...)", _cma,
                 options=("absent_attention",)),
    Architecture("ms-cma", "multi-scale CMA: the CMA head on two backbone stages, "
                 "probabilities averaged (Eq. 11)", "You et al. 2020 (MS-CMA)",
                 lambda r: _cma(r, multi_scale=True), options=("absent_attention",)),
    Architecture("srdl", "category-specific channel and spatial attention from "
                 "GNN-contextualised label embeddings; object erasing while training",
                 "Pu et al. 2022, Semantic Representation and Dependency Learning "
                 "(shared/papers/srdl_pu2022...)", _srdl, needs_label_embeddings=True,
                 options=("top_k", "alpha")),
    Architecture("kbranch", "K-Branch CNN-RNN: one CNN per Sentinel-2 resolution (10/20/60 m, "
                 "native pixels) on 16 patches, Bi-LSTM, patch multi-attention",
                 "Sumbul & Demir 2019, A CNN-RNN Framework with a Novel Patch-Based "
                 "Multi-Attention Mechanism (shared/papers/kbranch-cnn-rnn_sumbul2019...)",
                 _kbranch, options=("variant", "patches")),
    Architecture("cmgm", "residual multi-attention parts aligned with label-graph GCN "
                 "embeddings, Bi-LSTM credible-label predictor (variant: N-LSTM, N-R-LSTM, "
                 "N-BiLSTM, N-R-BiLSTM)", "Li et al. 2022, CM-GM: residual multi-attention "
                 "CNN-LSTM and label graph mining (shared/papers/cm-gm_li2022...)", _cmgm,
                 needs_label_embeddings=True, options=CMGM_OPTIONS),
)}


def check_arch_config(arch: str, arch_config: dict[str, Any]) -> None:
    """Refuse an architecture option its builder would not read (a typo would otherwise
    train with the option's default, silently)."""
    if arch not in ARCHITECTURES:
        return  # build() names the unknown architecture
    known = COMMON_OPTIONS + ARCHITECTURES[arch].options
    unknown = sorted(set(arch_config) - set(known))
    if unknown:
        raise TileLabelError(f"'{arch}' has no option {', '.join(unknown)} ([arch_config] of "
                             f"the recipe, or a flag such as --variant); its options are "
                             f"{', '.join(sorted(known))}")


def build(arch: str, request: BuildRequest) -> nn.Module:
    """Build a model; ``request.pretrained`` loads offline ImageNet backbone weights."""
    if arch not in ARCHITECTURES:
        raise ModelFileError(f"unknown architecture '{arch}'; this engine knows: "
                             f"{', '.join(sorted(ARCHITECTURES))}. Update TileLabel or "
                             "choose a model made for this version.")
    return ARCHITECTURES[arch].builder(request)
