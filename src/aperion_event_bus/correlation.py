"""1.x import path ``aperion_event_bus.correlation``: re-exports of ``context``."""

from .context import (
    CORRELATION_ID_HEADER,
    REQUEST_ID_HEADER,
    CorrelationContext,
    add_correlation_to_log_extra,
    clear_correlation_id,
    extract_correlation_id_from_headers,
    generate_correlation_id,
    get_correlation_id,
    get_headers_with_correlation,
    set_correlation_id,
)

__all__ = [
    "CORRELATION_ID_HEADER",
    "REQUEST_ID_HEADER",
    "CorrelationContext",
    "add_correlation_to_log_extra",
    "clear_correlation_id",
    "extract_correlation_id_from_headers",
    "generate_correlation_id",
    "get_correlation_id",
    "get_headers_with_correlation",
    "set_correlation_id",
]
