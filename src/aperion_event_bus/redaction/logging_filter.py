"""A ``logging.Filter`` that redacts each record before any handler formats it.

It redacts the message (after ``%``-formatting, so values passed as ``args``
are covered whatever their type), ``extra`` fields (key-aware: ``extra={"password":
...}`` becomes ``[REDACTED]``), exception text and stack info. Records are
marked, so the filter can sit on both a logger and its handlers at no extra cost.

Filters on a *logger* only see records logged through that logger, not ones
propagated from child loggers; to cover everything, put the filter on the
*handlers* (``install_redacting_filter`` does both).
"""

from __future__ import annotations

import logging
from typing import Final

from ._default import default_redactor
from .redactor import Redactor

__all__ = ["RedactingFilter", "install_redacting_filter"]

_STANDARD_ATTRS: Final = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))
) | {"message", "asctime", "taskName"}
_MARK: Final = "_aperion_redacted"
_FAILED: Final = "[REDACTION_FAILED] log message withheld"


class RedactingFilter(logging.Filter):
    """Redact message, args, extra fields and exception text of every record.

    ``RedactingFilter(redactor=None, name="")``: ``redactor`` defaults to the shared
    default; ``name`` restricts it to a logger subtree like ``logging.Filter``.
    The filter never drops a record; if redaction itself fails the message is
    withheld rather than logged unredacted.
    """

    def __init__(self, redactor: Redactor | None = None, name: str = "") -> None:
        super().__init__(name)
        self.redactor: Final = redactor if redactor is not None else default_redactor()

    def filter(self, record: logging.LogRecord) -> bool:
        if not super().filter(record):
            return True  # outside our subtree: pass through untouched
        if getattr(record, _MARK, False):
            return True
        try:
            self._redact(record)
        except Exception:
            record.msg = _FAILED
            record.args = None
            record.exc_info = None
            record.exc_text = None
        setattr(record, _MARK, True)
        return True

    def _redact(self, record: logging.LogRecord) -> None:
        r = self.redactor
        msg = record.msg
        if record.args:
            try:
                full: str | None = record.getMessage()
            except Exception:
                full = None
            if full is not None:
                redacted = r.redact_string(full)
                if redacted != full:
                    record.msg = redacted
                    record.args = None
            else:
                record.msg = r.redact(msg)
                record.args = r.redact(record.args)
        elif isinstance(msg, str):
            record.msg = r.redact_string(msg)
        elif isinstance(msg, (dict, list, tuple)):
            record.msg = r.redact(msg)
        else:
            text = str(msg)
            redacted = r.redact_string(text)
            if redacted != text:
                record.msg = redacted
        attrs = record.__dict__
        for key in [k for k in attrs if k not in _STANDARD_ATTRS and not k.startswith("_")]:
            attrs[key] = r.redact_field(key, attrs[key])
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = r.redact_string(record.exc_text)
        if record.stack_info:
            record.stack_info = r.redact_string(record.stack_info)


def install_redacting_filter(
    logger: logging.Logger | str | None = None,
    redactor: Redactor | None = None,
    *,
    handlers: bool = True,
) -> RedactingFilter:
    """Add one ``RedactingFilter`` to ``logger`` (root by default) and its handlers.

    Returns the filter so it can be removed again (``logger.removeFilter(f)``).
    Handlers added to the logger later need ``handler.addFilter(f)`` themselves.
    """
    target = logger if isinstance(logger, logging.Logger) else logging.getLogger(logger)
    flt = RedactingFilter(redactor)
    target.addFilter(flt)
    if handlers:
        for handler in target.handlers:
            handler.addFilter(flt)
    return flt
