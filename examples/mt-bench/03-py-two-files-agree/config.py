"""Settings shared by the client modules."""

# How many times call_with_retry() calls a failing function before giving up.
MAX_ATTEMPTS = 3

# Seconds to wait for a reply.
TIMEOUT_SECONDS = 10
