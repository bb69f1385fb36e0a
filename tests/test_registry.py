"""The promotion rule: first version, better, worse, baseline margin, force and never."""

from __future__ import annotations

import pytest
from enrich.registry import decide

RULE = {"min_lift_over_baseline": 0.02, "min_improvement": 0.01}


@pytest.mark.parametrize(("mode", "challenger", "baseline", "champion", "higher", "promote", "why"), [
    ("auto", 0.80, 0.60, None, True, True, "no champion yet"),
    ("auto", 0.61, 0.60, None, True, False, "does not beat the baseline by 0.02"),
    ("auto", 0.80, 0.60, 0.78, True, True, "beats the champion"),
    ("auto", 0.785, 0.60, 0.78, True, False, "does not beat the champion by 0.01"),
    ("auto", 0.70, 0.60, 0.78, True, False, "does not beat the champion"),
    # Lower is better (RMSE): beating means being smaller.
    ("auto", 90.0, 100.0, 95.0, False, True, "beats the champion"),
    ("auto", 99.99, 100.0, None, False, False, "does not beat the baseline"),
    ("auto", 94.995, 100.0, 95.0, False, False, "does not beat the champion"),
    ("force", 0.10, 0.60, 0.90, True, True, "forced"),
    ("never", 0.99, 0.60, None, True, False, "--promote never"),
])
def test_decide(mode, challenger, baseline, champion, higher, promote, why):  # noqa: PLR0917 - parametrized
    decision = decide(mode, challenger=challenger, baseline=baseline, champion=champion, higher_is_better=higher,
                      **RULE)
    assert decision.promote is promote
    assert why in decision.reason


def test_equal_to_the_champion_is_not_an_improvement():
    decision = decide("auto", challenger=0.8, baseline=0.5, champion=0.8, higher_is_better=True,
                      min_lift_over_baseline=0.0, min_improvement=0.0)
    assert not decision.promote
