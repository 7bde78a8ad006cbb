"""emofs feature store: Lance datasets of clips, features, predictions and errors.

Knows nothing about models: encoders live in ``extractors``, training in ``heads``/``llm``.
"""

from .errors import (
    DatasetChangedError,
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

# Store, store_info, ... load pyarrow / lance (a tenth of a second or more): they are
# imported on first use, so ``import featurestore.errors`` (every CLI command) stays cheap.
_LAZY = {
    "store_info": "inventory", "feature_set_info": "inventory",
    "DEFAULT_STORE": "store", "Store": "store", "resolve_store_uri": "store",
    "sql_in": "store", "sql_quote": "store",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


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
    "DatasetChangedError",
    "IndexNotFoundError",
    "IndexCorruptError",
    "DimensionMismatchError",
]
