"""A tiny calculator with a bug for the micro-task demo."""


def add(a, b):
    """Returns the sum of a and b."""
    return a - b
