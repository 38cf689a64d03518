"""BigEarthNet-S2 readers: v1 patch folders and v2 (reBEN) LMDB + parquet.

Both give the 12 Sentinel-2 L2A bands at their native sizes (10 m: 120 px, 20 m: 60 px,
60 m: 20 px) as reflectance (DN / 10000; these archives predate the processing-baseline
04.00 offset, or were reprocessed without it).

- ``bigearthnet-v1:DIR``: one folder per patch, ``<patch>_B01.tif ... _B12.tif, _B8A.tif``
  and ``<patch>_labels_metadata.json`` with the 43 CORINE names. Labels are mapped to the
  19-class nomenclature unless ``nomenclature=43``. v1 has no official split: a stable
  hash of the patch name (70/15/15) decides it.
- ``bigearthnet-v2:DIR``: ``metadata.parquet`` (patch_id, labels (19 classes), split) and an
  LMDB (``*.lmdb`` folder or a folder holding ``data.mdb``) mapping each patch id to a
  safetensors dict of bands; the official split (``validation`` read as ``val``).
  Patches listed in the snow/cloud/shadow parquet are left out, as the reBEN authors
  recommend.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engine.band_groups import S2_RESOLUTION_M
from engine.data.bigearthnet_labels import LABELS_19, LABELS_43, to_19
from engine.data.datasets import MultiLabelDataset, Sample, _check_split
from engine.errors import TileLabelError

S2_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
QUANTIFICATION = 10000.0
PATCH_PX = 120


def _targets(names: list[str], vocabulary: list[str], where: str) -> np.ndarray:
    unknown = [n for n in names if n not in vocabulary]
    if unknown:
        raise TileLabelError(f"{where}: label(s) {', '.join(unknown)} are not BigEarthNet labels")
    return np.array([float(l in names) for l in vocabulary], np.float32)


class BigEarthNetV1(MultiLabelDataset):
    kind = "bigearthnet-v1"

    @classmethod
    def open(cls, root: Path, nomenclature: int = 19) -> "BigEarthNetV1":
        root = Path(root)
        vocabulary = LABELS_19 if nomenclature == 19 else LABELS_43
        samples = []
        unlabelled = [d.name for d in sorted(root.iterdir()) if d.is_dir()
                      and not (d / f"{d.name}_labels_metadata.json").is_file()]
        for meta in sorted(root.glob("*/*_labels_metadata.json")):
            patch = meta.parent.name
            missing = [b for b in S2_BANDS if not (meta.parent / f"{patch}_{b}.tif").is_file()]
            if missing:
                raise TileLabelError(f"{meta.parent}: band file(s) {', '.join(missing)} missing")
            names = json.loads(meta.read_text()).get("labels")
            if names is None:
                raise TileLabelError(f"{meta}: no 'labels' entry")
            names = to_19(names) if nomenclature == 19 else names
            samples.append(Sample(patch, _targets(names, vocabulary, str(meta)), str(meta.parent)))
        if not samples:
            raise TileLabelError(f"{root} is not a BigEarthNet v1 folder: no "
                                 "<patch>/<patch>_labels_metadata.json found")
        ds = cls(root, list(vocabulary), list(S2_BANDS), 10.0, samples, PATCH_PX)
        if unlabelled:
            ds.warnings.append(f"{len(unlabelled)} patch folder(s) without "
                               f"<patch>_labels_metadata.json skipped (e.g. {unlabelled[0]})")
        return ds

    def read(self, sample: Sample) -> dict[str, np.ndarray]:
        import rasterio

        folder = Path(sample.source)
        out = {}
        for band in self.bands:
            with rasterio.open(folder / f"{folder.name}_{band}.tif") as ds:
                out[band] = ds.read(1).astype(np.float32) / QUANTIFICATION
        return out


class BigEarthNetV2(MultiLabelDataset):
    kind = "bigearthnet-v2"

    @classmethod
    def open(cls, root: Path) -> "BigEarthNetV2":
        import pandas as pd

        root = Path(root)
        meta_path = root / "metadata.parquet"
        lmdb_dir = next((p.parent for p in sorted(root.glob("**/data.mdb"))), None)
        if not meta_path.is_file() or lmdb_dir is None:
            raise TileLabelError(f"{root} is not a BigEarthNet v2 (reBEN) folder: it needs "
                                 "metadata.parquet and an LMDB folder holding data.mdb")
        meta = pd.read_parquet(meta_path)
        bad = _snow_cloud_ids(root)
        meta = meta[~meta["patch_id"].isin(bad)]
        samples = [Sample(row.patch_id, _targets(list(row.labels), LABELS_19, str(meta_path)),
                          str(row.split)) for row in meta.itertuples()]
        ds = cls(root, list(LABELS_19), list(S2_BANDS), 10.0, samples, PATCH_PX)
        ds.lmdb_dir = lmdb_dir
        ds._env = None
        return ds

    def split(self, name: str, seed: int = 0) -> list[Sample]:
        _check_split(name)
        official = {"train": "train", "val": "validation", "test": "test"}[name]
        return [s for s in self.samples if s.source == official]

    def read(self, sample: Sample) -> dict[str, np.ndarray]:
        import lmdb
        from safetensors.numpy import load

        if self._env is None:
            self._env = lmdb.open(str(self.lmdb_dir), readonly=True, lock=False,
                                  readahead=False, subdir=True)
        with self._env.begin() as txn:
            blob = txn.get(sample.name.encode())
        if blob is None:
            raise TileLabelError(f"patch {sample.name} is in metadata.parquet but not in "
                                 f"the LMDB {self.lmdb_dir}")
        bands = load(blob)
        return {b: bands[b].astype(np.float32) / QUANTIFICATION for b in self.bands}

    def __getstate__(self) -> dict:  # LMDB handles do not cross process boundaries
        state = dict(self.__dict__)
        state["_env"] = None
        return state


def _snow_cloud_ids(root: Path) -> set[str]:
    import pandas as pd

    path = root / "metadata_for_patches_with_snow_cloud_or_shadow.parquet"
    return set(pd.read_parquet(path)["patch_id"]) if path.is_file() else set()
