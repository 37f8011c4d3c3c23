"""Sizes and progress bars as Docker prints them (go-units ``HumanSize``, jsonmessage's bar)."""

from __future__ import annotations

_DECIMAL_UNITS = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")

#: Docker draws the bar in 50 cells, one per 2 %.
BAR_CELLS = 50

#: Docker hides the bar on terminals this narrow or narrower, keeping only the numbers.
MIN_WIDTH_FOR_BAR = 110


def human_size(n: float) -> str:
    """``n`` bytes in decimal SI units with 4 significant digits: ``1.049MB``, ``3.42GB``."""
    size = float(n)
    unit = 0
    while size >= 1000.0 and unit < len(_DECIMAL_UNITS) - 1:
        size /= 1000.0
        unit += 1
    return f"{size:.4g}{_DECIMAL_UNITS[unit]}"


def progress_bar(current: int, total: int | None) -> str:
    """The bar and byte counts Docker shows for a transfer: ``[==>    ]  1.2MB/3.4MB``."""
    return progress_text(current, total, with_bar=True)


def progress_text(current: int | None, total: int | None, *, with_bar: bool) -> str:
    """The progress part of a layer line; ``with_bar=False`` gives the counts alone."""
    current = current or 0
    total = total or 0
    if current <= 0 and total <= 0:
        return ""
    if total <= 0:
        # Size unknown (a stream still being compressed): the count alone.
        return f"{human_size(current):>8}"
    bar = _bar(current, total) if with_bar else ""
    return bar + _counts(current, total)


def _bar(current: int, total: int) -> str:
    filled = max(0, min(int(current / total * 100) // 2, BAR_CELLS))
    return f"[{'=' * filled}>{' ' * (BAR_CELLS - filled)}] "


def _counts(current: int, total: int) -> str:
    # Docker drops the total when a producer over-reports, rather than show 120MB/100MB.
    if current > total:
        return f"{human_size(current):>8}"
    return f"{human_size(current):>8}/{human_size(total)}"


def human_duration(seconds: float) -> str:
    """Docker's ``units.HumanDuration``: "Less than a second", "5 minutes", "2 years"."""
    whole = int(seconds)
    minutes = int(seconds / 60)
    hours = int(seconds / 3600 + 0.5)
    if whole < 1:
        return "Less than a second"
    if whole == 1:
        return "1 second"
    if whole < 60:
        return f"{whole} seconds"
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"
