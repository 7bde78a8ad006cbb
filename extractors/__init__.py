"""Everything that touches media or runs encoders: probing, decoding, ingest, extraction."""

from .ingest import IngestReport, find_media, ingest
from .pipeline import ExtractReport, extract, extract_file
from .probe import AUDIO_EXTENSIONS, MEDIA_EXTENSIONS, VIDEO_EXTENSIONS, ProbeError, probe
from .registry import build_encoder, encoder_table

__all__ = [
    "ingest",
    "IngestReport",
    "find_media",
    "probe",
    "ProbeError",
    "MEDIA_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "AUDIO_EXTENSIONS",
    "extract",
    "extract_file",
    "ExtractReport",
    "build_encoder",
    "encoder_table",
]
