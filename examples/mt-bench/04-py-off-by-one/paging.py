"""Splits a list into numbered pages."""


def page_count(total, per_page):
    """How many pages `total` items fill, `per_page` to a page (the last may be partial)."""
    return -(-total // per_page)


def page(items, number, per_page):
    """The items on page `number`; pages are numbered from 1. A page past the end is empty."""
    if number < 1:
        raise ValueError("pages are numbered from 1")
    start = number * per_page
    return items[start:start + per_page]
