"""Counts the hostile-input, fault and fuzz tests report at the end of a run
(`cases tried`, `faults injected`, `fuzz executions`), so the numbers an
issue note quotes come from the run itself."""
from collections import Counter

COUNTS: Counter = Counter()


def note(what: str, n: int = 1) -> None:
    COUNTS[what] += n


def summary(terminalreporter) -> None:
    """For pytest_terminal_summary in conftest.py."""
    if COUNTS:
        terminalreporter.write_sep("-", "layerpipe battery counts")
        for what, n in sorted(COUNTS.items()):
            terminalreporter.write_line(f"{what}: {n}")
