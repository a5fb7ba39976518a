"""The interval and the verdict (pipeline/report/verdict.py) against values computed by hand."""
from __future__ import annotations

import math

import pytest

from pipeline.report.verdict import counts, headline, spread, verdict


def test_one_run_has_a_mean_and_no_spread():
    s = spread([71.25])
    assert (s.n, s.mean, s.std, s.half_width) == (1, 71.25, None, None)
    assert (s.low, s.high) == (71.25, 71.25)     # the rule's interval: the run itself
    assert spread([]) is None


def test_two_runs_give_the_t_interval_with_one_degree_of_freedom():
    # mean 91, s = sqrt(((90-91)^2 + (92-91)^2) / 1) = sqrt(2); t(0.975, 1) = 12.7062;
    # half-width = 12.7062 * sqrt(2) / sqrt(2) = 12.7062
    s = spread([90.0, 92.0])
    assert s.mean == 91.0 and s.std == pytest.approx(math.sqrt(2))
    assert s.half_width == pytest.approx(12.7062, abs=1e-4)


def test_three_runs_and_another_confidence():
    # mean 92, s^2 = (4 + 1 + 9) / 2 = 7; t(0.975, 2) = 4.3027 -> 4.3027 * sqrt(7) / sqrt(3) = 6.5724;
    # at 90%: t(0.95, 2) = 2.9200 -> 4.4604
    assert spread([90, 91, 95]).half_width == pytest.approx(6.5724, abs=1e-4)
    assert spread([90, 91, 95], confidence=0.90).half_width == pytest.approx(4.4604, abs=1e-4)


def test_the_seed_figure_inside_the_widened_interval_is_reproduced():
    ours = spread([90, 91, 95])                      # [85.43, 98.57]
    assert verdict(ours, 85.0, allowance=1.0).label == "reproduced"    # inside 84.43..99.57
    v = verdict(ours, 84.0, allowance=1.0)           # 0.43 under the widened low end: ours above
    assert (v.label, round(v.by, 4), v.diff) == ("above", 0.4276, 8.0)
    v = verdict(ours, 100.0, allowance=1.0)
    assert (v.label, round(v.by, 4), v.diff) == ("below", 0.4276, -8.0)


def test_one_run_is_judged_by_the_allowance_alone():
    assert verdict(spread([70.0]), 71.0, allowance=1.0).label == "reproduced"   # on the edge
    v = verdict(spread([70.0]), 71.5, allowance=1.0)
    assert (v.label, v.by, v.diff) == ("below", 0.5, -1.5)


def test_a_cut_figure_stands_for_the_whole_next_point():
    # printed 88 with %d: anything in [88, 89]; ours 90.5 widened by 1 reaches 89.5 > 89: above by 0.5
    v = verdict(spread([90.5]), 88.0, allowance=1.0, width=1.0)
    assert (v.label, v.by) == ("above", 0.5)
    assert verdict(spread([89.5]), 88.0, allowance=1.0, width=1.0).label == "reproduced"
    assert verdict(spread([89.5]), 88.0, allowance=1.0).label == "above"    # the same figure taken as exact


def test_no_run_is_not_run_and_the_headline_counts_every_kind():
    none = verdict(None, 70.0, allowance=1.0)
    assert (none.label, none.by, none.diff) == ("not run", None, None)
    tally = counts([none, verdict(spread([70.0]), 70.0, 1.0), verdict(spread([60.0]), 70.0, 1.0)])
    assert tally == {"reproduced": 1, "above": 0, "below": 1, "not run": 1}
    assert headline(tally) == "1 of 3 seed figures reproduced, 1 below, 0 above, 1 not run"
