"""Dataset readers and label vocabularies on real samples."""
from __future__ import annotations


def test_bigearthnet_43_to_19_conversion_is_complete_and_official():
    from engine.data.bigearthnet_labels import LABELS_19, LABELS_43, OLD_TO_NEW, to_19

    assert len(LABELS_43) == 43 and len(LABELS_19) == 19
    assert len(OLD_TO_NEW) == 43 - 11  # eleven classes have no 19-class counterpart
    assert set(OLD_TO_NEW) <= set(LABELS_43)
    assert to_19(["Water courses", "Sea and ocean", "Airports", "Water bodies"]) == [
        "Inland waters", "Marine waters"]
