"""CM-GM: residual multi-attention CNN, label-graph GCN, cross-modal alignment and the
(Bi-)LSTM credible-label predictor. ``model`` assembles the pieces in ``rmam``,
``alignment`` and ``sequence``."""
from engine.models.cmgm.model import CMGM, DEFAULT_VARIANT, VARIANTS, CMGMConfig, Variant

__all__ = ["CMGM", "CMGMConfig", "DEFAULT_VARIANT", "VARIANTS", "Variant"]
