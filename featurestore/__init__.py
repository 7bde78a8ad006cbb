"""emofs feature store: Lance datasets of clips, features, predictions and errors.

Knows nothing about models: encoders live in ``extractors``, training in ``heads``/``llm``.
"""

from .errors import (
    DimensionMismatchError,
    EmofsError,
    IndexCorruptError,
    IndexNotFoundError,
    InputError,
    LabelsError,
    QueryError,
    SchemaVersionError,
    StoreError,
    StoreNotFoundError,
)
from .inventory import feature_set_info, store_info
from .store import DEFAULT_STORE, Store, resolve_store_uri, sql_in, sql_quote

__all__ = [
    "Store",
    "DEFAULT_STORE",
    "resolve_store_uri",
    "sql_quote",
    "sql_in",
    "store_info",
    "feature_set_info",
    "EmofsError",
    "InputError",
    "LabelsError",
    "QueryError",
    "SchemaVersionError",
    "StoreError",
    "StoreNotFoundError",
    "IndexNotFoundError",
    "IndexCorruptError",
    "DimensionMismatchError",
]
