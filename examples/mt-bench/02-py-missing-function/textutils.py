"""Small text helpers."""


def collapse_spaces(text):
    """Replaces every run of whitespace with one space and trims both ends."""
    return " ".join(text.split())


def initials(name):
    """The upper-case first letters of each word: "ada lovelace" -> "AL"."""
    return "".join(word[0].upper() for word in name.split())
