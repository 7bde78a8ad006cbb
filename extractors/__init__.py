"""Everything that touches media or runs encoders: probing, decoding, ingest, extraction."""

from .ingest import IngestReport, find_media, ingest
from .probe import AUDIO_EXTENSIONS, MEDIA_EXTENSIONS, VIDEO_EXTENSIONS, ProbeError, probe

__all__ = [
    "ingest",
    "IngestReport",
    "find_media",
    "probe",
    "ProbeError",
    "MEDIA_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "AUDIO_EXTENSIONS",
]
