"""BigEarthNet label vocabularies: the 43 CORINE Land Cover level-3 names of v1 and the
19-class nomenclature of Sumbul et al. (2021, "BigEarthNet-MM ... a new class
nomenclature"), with the official 43 -> 19 conversion. Eleven of the 43 classes have no
19-class counterpart (they are hard to see at 10 m) and are dropped by the conversion.
"""
from __future__ import annotations

LABELS_43 = [
    "Continuous urban fabric", "Discontinuous urban fabric", "Industrial or commercial units",
    "Road and rail networks and associated land", "Port areas", "Airports",
    "Mineral extraction sites", "Dump sites", "Construction sites", "Green urban areas",
    "Sport and leisure facilities", "Non-irrigated arable land", "Permanently irrigated land",
    "Rice fields", "Vineyards", "Fruit trees and berry plantations", "Olive groves", "Pastures",
    "Annual crops associated with permanent crops", "Complex cultivation patterns",
    "Land principally occupied by agriculture, with significant areas of natural vegetation",
    "Agro-forestry areas", "Broad-leaved forest", "Coniferous forest", "Mixed forest",
    "Natural grassland", "Moors and heathland", "Sclerophyllous vegetation",
    "Transitional woodland/shrub", "Beaches, dunes, sands", "Bare rock",
    "Sparsely vegetated areas", "Burnt areas", "Inland marshes", "Peatbogs", "Salt marshes",
    "Salines", "Intertidal flats", "Water courses", "Water bodies", "Coastal lagoons",
    "Estuaries", "Sea and ocean",
]

NEW_FROM_OLD: dict[str, list[str]] = {
    "Urban fabric": ["Continuous urban fabric", "Discontinuous urban fabric"],
    "Industrial or commercial units": ["Industrial or commercial units"],
    "Arable land": ["Non-irrigated arable land", "Permanently irrigated land", "Rice fields"],
    "Permanent crops": ["Vineyards", "Fruit trees and berry plantations", "Olive groves",
                        "Annual crops associated with permanent crops"],
    "Pastures": ["Pastures"],
    "Complex cultivation patterns": ["Complex cultivation patterns"],
    "Land principally occupied by agriculture, with significant areas of natural vegetation": [
        "Land principally occupied by agriculture, with significant areas of natural vegetation"],
    "Agro-forestry areas": ["Agro-forestry areas"],
    "Broad-leaved forest": ["Broad-leaved forest"],
    "Coniferous forest": ["Coniferous forest"],
    "Mixed forest": ["Mixed forest"],
    "Natural grassland and sparsely vegetated areas": ["Natural grassland",
                                                       "Sparsely vegetated areas"],
    "Moors, heathland and sclerophyllous vegetation": ["Moors and heathland",
                                                       "Sclerophyllous vegetation"],
    "Transitional woodland, shrub": ["Transitional woodland/shrub"],
    "Beaches, dunes, sands": ["Beaches, dunes, sands"],
    "Inland wetlands": ["Inland marshes", "Peatbogs"],
    "Coastal wetlands": ["Salt marshes", "Salines"],
    "Inland waters": ["Water courses", "Water bodies"],
    "Marine waters": ["Coastal lagoons", "Estuaries", "Sea and ocean"],
}
LABELS_19 = list(NEW_FROM_OLD)
OLD_TO_NEW = {old: new for new, olds in NEW_FROM_OLD.items() for old in olds}


def to_19(labels_43: list[str]) -> list[str]:
    """The 19-class labels of a patch labelled with the 43 CORINE names."""
    return sorted({OLD_TO_NEW[l] for l in labels_43 if l in OLD_TO_NEW}, key=LABELS_19.index)
