"""Everything that touches media or runs encoders: probing, decoding, ingest, extraction."""

from .ingest import IngestReport, find_media, ingest
from .pipeline import ExtractReport, extract, extract_file
from .recipes import parse_token_counts
from .probe import AUDIO_EXTENSIONS, MEDIA_EXTENSIONS, VIDEO_EXTENSIONS, ProbeError, probe
from .registry import EncoderRef, build_encoder, encoder_table, parse_ref
from .specs import group_by_settings

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
    "parse_token_counts",
    "EncoderRef",
    "parse_ref",
    "build_encoder",
    "encoder_table",
    "group_by_settings",
]
