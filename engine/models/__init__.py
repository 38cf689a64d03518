"""Models: backbones, the seed models, baselines and the architecture registry."""
from engine.models.output import ModelOutput
from engine.models.registry import ARCHITECTURES, BuildRequest, build

__all__ = ["ARCHITECTURES", "BuildRequest", "ModelOutput", "build"]
