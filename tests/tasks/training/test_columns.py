"""The vectorised text path reads every cell exactly as serving.contract.inputs' rulebook does, problems included."""

import numpy as np
import pyarrow as pa
import pytest

from serving.contract.inputs import check_typed
from serving.contract.schema import ColumnSpec
from tasks.training.columns import from_text

pytestmark = pytest.mark.unit

CELLS = {
    "numeric": ["1.5", " 2 ", "", "NA", "nan", "-inf", "1e400", "1e-3", "00012", "+3", ".5"],
    "numeric_fallback": ["1.5", "1_000", "٣", "x", "1,5", "", "null"],    # Python's float() reads what Arrow does not
    "integer": ["1", "2.5", " 7", "None", "n/a", "-3", "1e2"],
    "boolean": ["true", "F", " yes ", "N", "1", "0", "maybe", "", "NULL", "2"],
    "categorical": ["a", " b ", "", "NaN", "c", "a", "zz"],
}
SPECS = {
    "numeric": ColumnSpec(name="x", type="numeric", nullable=True, min=-10, max=1e9),
    "numeric_fallback": ColumnSpec(name="x", type="numeric", nullable=False),
    "integer": ColumnSpec(name="x", type="integer", nullable=False, min=0, max=50),
    "boolean": ColumnSpec(name="x", type="boolean", nullable=True),
    "categorical": ColumnSpec(name="x", type="categorical", nullable=False, categories=("a", "b", "c")),
}


@pytest.mark.parametrize("case", sorted(CELLS))
def test_text_cells_read_as_the_rulebook_reads_them(case):
    spec, cells = SPECS[case], CELLS[case]
    expected, expected_problems = check_typed(spec, cells)
    got, problems = from_text(spec, pa.chunked_array([cells[:3], cells[3:]]))   # a CSV table is chunked
    np.testing.assert_array_equal(got.null, expected.null)
    np.testing.assert_array_equal(got.invalid, expected.invalid)
    assert got.values.dtype == expected.values.dtype
    np.testing.assert_array_equal(got.values, expected.values)
    assert problems == expected_problems and problems   # every case holds a bad cell
