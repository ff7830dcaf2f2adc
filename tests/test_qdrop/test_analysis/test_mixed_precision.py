"""Sensitivity-guided mixed precision (qdrop.analysis.mixed_precision) on synthetic rankings."""

import pytest
import yaml

from qdrop.analysis import average_weight_bits, format_overrides, suggest_overrides

COUNTS = {"stem": 100, "a": 1000, "b": 1000, "c": 4000, "d": 1000}
BITS = {"stem": 8.0, "a": 2.0, "b": 2.0, "c": 2.0, "d": 2.0}
SCORES = [
    {"unit": "stem", "score": 9.0},
    {"unit": "a", "score": 1.0},
    {"unit": "b", "score": 3.0},
    {"unit": "c", "score": 5.0},
    {"unit": "d", "score": 0.5},
]


def test_average_counts_every_weight_element():
    assert average_weight_bits(BITS, COUNTS) == pytest.approx((800 + 2 * 7000) / 7100)


def test_most_sensitive_units_that_fit_are_raised_and_a_large_one_is_passed_over():
    base = average_weight_bits(BITS, COUNTS)
    budget = base + 2 * 2000 / 7100  # room for two 1000-weight units at 4 bits, not for 'c' (4000)
    entries = suggest_overrides(SCORES, COUNTS, BITS, budget, high_bit=4)
    # 'stem' is already above 4 bits, 'c' does not fit; then 'b' and 'a' in order of score
    assert entries == [{"modules": "b", "w_qconfig": {"bit": 4}}, {"modules": "a", "w_qconfig": {"bit": 4}}]
    raised = {**BITS, "a": 4.0, "b": 4.0}
    assert average_weight_bits(raised, COUNTS) <= budget


def test_a_budget_for_everything_raises_everything_below_the_high_bit():
    entries = suggest_overrides(SCORES, COUNTS, BITS, budget=8.0, high_bit=4)
    assert [entry["modules"] for entry in entries] == ["c", "b", "a", "d"]


def test_a_budget_at_the_current_average_changes_nothing_and_below_it_is_refused():
    base = average_weight_bits(BITS, COUNTS)
    assert suggest_overrides(SCORES, COUNTS, BITS, base, high_bit=4) == []
    with pytest.raises(ValueError, match="below the 2.0.. average weight bits"):
        suggest_overrides(SCORES, COUNTS, BITS, 2.0, high_bit=4)


def test_scores_of_unknown_units_are_refused():
    with pytest.raises(ValueError, match=r"units the model does not have: \['neck.x'\]"):
        suggest_overrides(SCORES + [{"unit": "neck.x", "score": 1.0}], COUNTS, BITS, 8.0, high_bit=4)


def test_the_block_reads_back_as_a_q_config_overrides_list():
    entries = suggest_overrides(SCORES, COUNTS, BITS, budget=8.0, high_bit=4)
    text = format_overrides(entries)
    assert text.startswith("overrides:\n")
    assert yaml.safe_load(text) == {"overrides": entries}
