"""Did we reproduce it? Our figure's spread over replicates, and a verdict per seed figure.

Pure functions of numbers, so that every figure the report prints about noise is checked by hand
in tests/test_verdict.py.

The interval is Student's t interval of the mean: mean +- t(confidence, n - 1) * s / sqrt(n), with s
the sample standard deviation (n - 1 in the denominator). One run has no spread: its interval is
unknown (None), never invented.

The rule, as the report states it (RULE): a seed figure is *reproduced* when it lies within our
interval widened on both sides by `allowance` points, the room left for the noise of the seed's own
single run; *above* when our widened interval lies wholly above it, *below* when wholly below; *not
run* when we have no figure. A seed figure printed with %d (`truncated`) stands for [X, X+1): it is
reproduced when that range meets our widened interval. With one run our interval is the point itself.
An ablation's change (child minus base) is judged the same way, over the per-replicate differences,
with allowance * sqrt(2): two single seed runs, each with its own noise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

VERDICTS = ("reproduced", "above", "below", "not run")
RULE = ("A seed figure is reproduced when it lies within our {confidence:.0%} interval (Student's t over "
        "the replicates; a single run's interval is the run itself) widened by {allowance:g} points on each "
        "side for the noise of the seed's own single run; otherwise ours is above or below it.")


@dataclass(frozen=True)
class Spread:
    """Replicates of one figure: n, mean, sample std and the interval's half-width (both None at n = 1)."""
    values: tuple[float, ...]
    mean: float
    std: float | None
    half_width: float | None
    confidence: float

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def low(self) -> float:
        return self.mean - (self.half_width or 0.0)

    @property
    def high(self) -> float:
        return self.mean + (self.half_width or 0.0)


def spread(values, confidence: float = 0.95) -> Spread | None:
    """The mean of `values` and its t interval; None for no values."""
    values = tuple(float(v) for v in values)
    if not values:
        return None
    n, mean = len(values), math.fsum(values) / len(values)
    if n == 1:
        return Spread(values, mean, None, None, confidence)
    std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    from scipy.stats import t
    return Spread(values, mean, std, float(t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n), confidence)


@dataclass(frozen=True)
class Verdict:
    label: str              # one of VERDICTS
    by: float | None        # points between the seed's figure and our widened interval (0 when reproduced)
    diff: float | None      # our mean minus the seed's figure (points)


def verdict(ours: Spread | None, seed: float, allowance: float, width: float = 0.0) -> Verdict:
    """The RULE above for one seed figure, which stands for [seed, seed + width] (width 1: a
    figure printed with %d)."""
    if ours is None:
        return Verdict("not run", None, None)
    seed_high = seed + width
    low, high = ours.low - allowance, ours.high + allowance
    diff = ours.mean - seed
    if high < seed:
        return Verdict("below", seed - high, diff)
    if low > seed_high:
        return Verdict("above", low - seed_high, diff)
    return Verdict("reproduced", 0.0, diff)


def counts(verdicts) -> dict[str, int]:
    """How many of each verdict, in VERDICTS' order (zeros included)."""
    labels = [v.label for v in verdicts]
    return {label: labels.count(label) for label in VERDICTS}


def headline(tally: dict[str, int]) -> str:
    """'k of N seed figures reproduced, m below, n above, p not run'."""
    total = sum(tally.values())
    return (f"{tally['reproduced']} of {total} seed figures reproduced, {tally['below']} below, "
            f"{tally['above']} above, {tally['not run']} not run")
