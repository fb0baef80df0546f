"""Per-field tolerances of the golden-vector families, read from each family's README.

Every family's README (``$MLCL_ORACLE_DIR/<family>/README.md``) ends with its suggested tolerances: losses
``rtol 1e-10`` and gradients ``atol 1e-12`` in float64 (all families), soft labels ``1e-15`` (EM + APL), the
float32 copies of the released CLML code ``rtol ~1e-6``, every float64 field of MulCon ``rtol 1e-10``; labels,
masks, counts and indices exactly. A checker holds one :class:`FieldTolerances` table per family, mapping field
names (``fnmatch`` patterns, first match wins) to a :class:`Tol`, and compares every field through it, so that
the tolerance follows the field's documented convention rather than the case. A float field is never compared
with exact equality: two computations of the same number (the official code's and ours, or two stored fields
derived from one value) may differ in the last bits.

A comparison passes when ``|actual - expected| <= atol' + rtol * |expected|`` element-wise (NaN equal to NaN,
infinities equal only to themselves), with ``atol' = atol`` or, for a field whose ``atol`` is relative to its
scale (``scaled=True``), ``atol * max(1, max |expected|)``. :meth:`Tol.allowance` gives that bound, which the
perturbation test (``tests/kit/test_oracle_tolerances.py``) uses to move a field just inside and just outside it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

#: Half an ulp of float32, relative: the rounding of a float64 value stored as float32.
F32_ROUNDING = 2.0**-24


@dataclass(frozen=True)
class Tol:
    """How one field is compared.

    Attributes:
        rtol: Relative tolerance.
        atol: Absolute tolerance (relative to ``max(1, max |expected|)`` when ``scaled``).
        scaled: See ``atol``.
        exact: Labels, masks, counts, indices: compared exactly.
        input: The field is an input of the case (read, not an output to reproduce). Inputs that the checker
            also compares with another field use the tolerance given here.
    """

    rtol: float = 0.0
    atol: float = 0.0
    scaled: bool = False
    exact: bool = False
    input: bool = False

    def allowance(self, expected: Any) -> np.ndarray:
        """Element-wise largest admissible ``|actual - expected|`` (0 for an exact field)."""
        exp = np.asarray(expected, dtype=np.float64)
        if self.exact:
            return np.zeros_like(exp)
        return self._atol(exp) + self.rtol * np.abs(exp)

    def _atol(self, exp: np.ndarray) -> float:
        if not self.scaled:
            return self.atol
        finite = np.abs(exp[np.isfinite(exp)])
        return self.atol * max(1.0, float(finite.max(initial=0.0)))

    @property
    def is_float_output(self) -> bool:
        """An output compared within a tolerance (what the perturbation test moves)."""
        return not (self.exact or self.input) and (self.rtol > 0 or self.atol > 0)


EXACT = Tol(exact=True)
#: An input of the case; when the checker compares it with another field, that field's tolerance applies.
INPUT = Tol(input=True, exact=True)
LOSS = Tol(rtol=1e-10)
GRAD = Tol(atol=1e-12)


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        return (x.double() if x.is_floating_point() else x).numpy()
    return np.asarray(x)


class FieldTolerances:
    """The tolerance table of one family: ``{field pattern: Tol}``, first match wins (insertion order)."""

    def __init__(self, family: str, rules: dict[str, Tol]) -> None:
        self.family = family
        self.rules = dict(rules)
        self._failures: list[str] | None = None

    def __getitem__(self, field: str) -> Tol:
        for pattern, tol in self.rules.items():
            if fnmatch.fnmatchcase(field, pattern):
                return tol
        raise AssertionError(f"{self.family}: no documented tolerance for field {field!r}")

    def check(
        self, field: str, actual: Any, expected: Any, case: str, *, what: str = "", rounding: float = 0.0
    ) -> None:
        """Compare ``actual`` with ``expected`` under ``field``'s tolerance; AssertionError naming the field.

        Args:
            field: The documented field whose tolerance applies (``expected`` is usually ``data[field]``).
            actual: Our value (tensor, array or number).
            expected: The stored value.
            case: Case name, for the message.
            what: What ``actual`` is, when it is not the plain computation of the field (e.g. "module").
            rounding: Extra relative tolerance for an ``actual`` held in a lower precision (``F32_ROUNDING``).
        """
        tol = self[field]
        label = f"{case}: {field}" + (f" ({what})" if what else "")
        try:
            act, exp = _numpy(actual), _numpy(expected)
            assert act.shape == exp.shape, f"{label}: shape {act.shape} != expected {exp.shape}"
            if tol.exact:
                np.testing.assert_array_equal(act, exp, err_msg=label)
                return
            act64, exp64 = act.astype(np.float64), exp.astype(np.float64)
            np.testing.assert_allclose(act64, exp64, rtol=tol.rtol + rounding, atol=tol._atol(exp64), err_msg=label)
        except AssertionError:
            if self._failures is None:
                raise
            self._failures.append(field)

    @contextmanager
    def collecting(self) -> Iterator[list[str]]:
        """Record the fields whose comparison fails instead of raising (for the perturbation test)."""
        self._failures = []
        try:
            yield self._failures
        finally:
            self._failures = None

    def float_outputs(self, data: dict[str, Any]) -> list[str]:
        """The fields of a case that are outputs compared within a tolerance, in the case's order."""
        return [k for k, v in data.items() if np.asarray(v).dtype.kind == "f" and self[k].is_float_output]
