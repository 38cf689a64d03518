"""Models: backbones, the paper models, baselines and the architecture registry
(engine.models.registry). engine.models.spec (model.json) is read without torch."""
