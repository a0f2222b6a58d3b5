"""What the micro-benchmarks share: timing a call, and the --quick/--json command line."""

from __future__ import annotations

import argparse
import json
import statistics
import time


def best_ns(call, number: int, repeat: int) -> tuple[float, float]:
    """(best, median) nanoseconds per call over `repeat` runs of `number` calls."""
    runs = []
    for _ in range(repeat):
        start = time.perf_counter_ns()
        for _ in range(number):
            call()
        runs.append((time.perf_counter_ns() - start) / number)
    return min(runs), statistics.median(runs)


def arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="finish in a few seconds")
    parser.add_argument("--json", action="store_true", help="end with one line of JSON")
    return parser.parse_args()


def print_json(figures: dict[str, float]) -> None:
    """The figures as one JSON object on the last line."""
    print(json.dumps({key: round(value, 3) for key, value in figures.items()}))
