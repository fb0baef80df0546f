"""Golden vectors computed with the official CLML, MulCon, GR Loss, AEVLP, BoostLU and EM + APL code.

Every ``*.npz`` under ``$MLCL_ORACLE_DIR/<family>`` for each family of :data:`CHECKERS` (default
``../shared/oracle``) is checked in float64 against the conventions documented in each folder's README.
The checks are driven by the documented field names, never by individual cases: a file that cannot be
interpreted fails the test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.helpers.oracles.aevlp import check_aevlp_case
from tests.helpers.oracles.boostlu import check_boostlu_case
from tests.helpers.oracles.clml import check_clml_case
from tests.helpers.oracles.emapl import check_emapl_case
from tests.helpers.oracles.grloss import check_grloss_case
from tests.helpers.oracles.mulcon import check_mulcon_case
from tests.helpers.paths import ORACLE_DIR

CHECKERS = {
    "clml": check_clml_case,
    "mulcon": check_mulcon_case,
    "grloss": check_grloss_case,
    "aevlp": check_aevlp_case,
    "boostlu": check_boostlu_case,
    "emapl": check_emapl_case,
}


def _cases() -> list[tuple[str, Path]]:
    found = []
    for family in CHECKERS:
        folder = ORACLE_DIR / family
        found += [(family, p) for p in sorted(folder.glob("*.npz"))]
    return found


def test_oracle_dir_has_cases() -> None:
    assert _cases(), f"no golden vectors under {ORACLE_DIR}/{{{','.join(CHECKERS)}}}"


@pytest.mark.parametrize(("family", "path"), _cases(), ids=lambda v: v.name if isinstance(v, Path) else v)
def test_golden_vector(family: str, path: Path) -> None:
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    CHECKERS[family](data, path.name)
