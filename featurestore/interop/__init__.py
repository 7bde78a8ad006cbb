"""Interoperability with Emotion-LLaMA and the MER toolkit (MERTools).

Import their per-clip ``.npy`` feature folders and annotation files into the store, and
export feature sets as the folders (plus annotation txt) Emotion-LLaMA's loader reads.
"""

from .annotations import (
    ANNOTATION_FORMATS,
    AnnotationImportReport,
    import_annotations,
    read_annotations,
)
from .layouts import EMOTION_LLAMA_FOLDERS, LAYOUTS
from .npy_export import FeatureExportReport, export_features
from .npy_features import FeatureImportReport, import_features

__all__ = [
    "ANNOTATION_FORMATS",
    "LAYOUTS",
    "EMOTION_LLAMA_FOLDERS",
    "AnnotationImportReport",
    "FeatureImportReport",
    "FeatureExportReport",
    "import_annotations",
    "read_annotations",
    "import_features",
    "export_features",
]
