"""The training log's loss: each term an epoch's mean over its steps."""
from __future__ import annotations

import numpy as np
import torch

from engine.train.losses import LossTally


def test_an_epochs_loss_terms_are_means_over_its_steps_and_sum_to_its_loss():
    tally = LossTally()
    assert np.isnan(tally.total()) and tally.breakdown() == ""
    tally.add({"asl": torch.tensor(1.0), "absent_attention": torch.tensor(0.5)})
    tally.add({"asl": torch.tensor(3.0)})  # a step without the model's own term
    assert tally.means() == {"asl": 2.0, "absent_attention": 0.25}
    assert tally.total() == 2.25
    assert tally.breakdown() == " (asl 2.0000 + absent_attention 0.2500)"
