"""JSON that strict parsers accept: numpy values become plain numbers and lists, NaN and infinities null.

json.dumps writes NaN, which is not JSON: browsers (the debug page) and Home Assistant refuse the whole message.
"""

from __future__ import annotations

import json
import math
from typing import Any


def plain(obj: Any) -> Any:
    """``obj`` with numpy scalars/arrays as numbers/lists, non-finite floats as None, other oddities as str."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if obj is None or isinstance(obj, (str, int)):
        return obj
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if hasattr(obj, "tolist"):
        return plain(obj.tolist())
    return str(obj)


def to_json(obj: Any) -> bytes:
    """Compact UTF-8 JSON of ``plain(obj)``."""
    return json.dumps(plain(obj), separators=(",", ":"), allow_nan=False).encode("utf-8")
