"""The one time stamp every output carries: SOURCE_DATE_EPOCH, default 1.

Never the clock: the same input gives the same bytes whenever it runs.  The
upper bound is what a ustar header's 11 octal digits hold (2**33 - 1).
"""
import os

from .errors import UsageError

DEFAULT = 1
MAX = 0o77777777777


def source_date_epoch() -> int:
    value = os.environ.get("SOURCE_DATE_EPOCH", str(DEFAULT))
    if not (value.isascii() and value.isdigit()) or int(value) > MAX:
        raise UsageError(f"SOURCE_DATE_EPOCH must be a whole number of seconds from 0 to {MAX}, not {value!r}")
    return int(value)
