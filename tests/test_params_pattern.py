"""The pattern that carries a numeric bound into the document for a number sent as a string: it
admits exactly the decimal spellings of 1..maximum, so the document and the handler agree."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from ledger.core import limits
from ledger.http.params import positive_decimal_pattern

maximums = st.integers(1, 10**6) | st.just(limits.AUDIT_PROOF_TREE_SIZE_MAX) | st.integers(1, 2**70)


@given(maximum=maximums, data=st.data())
def test_the_pattern_admits_exactly_one_to_the_maximum(maximum: int, data: st.DataObject) -> None:
    pattern = re.compile(positive_decimal_pattern(maximum))
    near = st.integers(max(0, maximum - 3), maximum + 3)
    number = data.draw(st.integers(0, 3 * maximum) | near | st.integers(0, 10 ** len(str(maximum))))
    assert bool(pattern.match(str(number))) == (1 <= number <= maximum)


@given(
    maximum=maximums, spelling=st.sampled_from(["0", "00", "01", "-1", "+1", " 1", "1 ", "1\n", ""])
)
def test_other_spellings_are_refused(maximum: int, spelling: str) -> None:
    assert not re.match(positive_decimal_pattern(maximum), spelling)
