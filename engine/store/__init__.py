"""The GeoPackage annotation store (DESIGN.md, "The annotation store")."""
from engine.store.annotation_store import AnnotationStore, TileRecord, label_columns

__all__ = ["AnnotationStore", "TileRecord", "label_columns"]
