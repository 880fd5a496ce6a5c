"""Formats durations for the player's status line."""


def format_duration(seconds):
    """A duration in whole seconds as M:SS, or as H:MM:SS from one hour up.

    65 -> "1:05", 600 -> "10:00", 3725 -> "1:02:05".
    """
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes}:{secs}"
    return f"{minutes}:{secs}"


def status_line(title, elapsed, total):
    """ "Title  1:05 / 3:20" """
    return f"{title}  {format_duration(elapsed)} / {format_duration(total)}"
