"""Range checks of numeric protocol settings, run before any data or weights are read: a zero batch, a negative
learning rate or an empty depth range is one error naming every offending ``--set`` key, not a crash (or a
meaningless number) minutes into a run."""

from __future__ import annotations

import math
from typing import Any, Sequence

#: (dotted key, value, whether it is valid, the rule it breaks)
Rule = tuple[str, Any, bool, str]


def positive(key: str, value: Any) -> Rule:
    return key, value, _finite(value) and value > 0, "must be positive"


def non_negative(key: str, value: Any) -> Rule:
    return key, value, _finite(value) and value >= 0, "must be >= 0"


def probability(key: str, value: Any) -> Rule:
    return key, value, _finite(value) and 0 <= value <= 1, "must be in [0, 1]"


def check_settings(what: str, rules: Sequence[Rule]) -> None:
    """Raises ``ValueError`` listing the ``rules`` that fail, as ``key=value (rule)``, for the run ``what``."""
    bad = [f"{key}={value!r} ({rule})" for key, value, ok, rule in rules if not ok]
    if bad:
        raise ValueError(f"{what}: invalid setting(s) " + "; ".join(bad) + "; change them with --set key=value")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
