"""The filters' error: what is wrong and where, for a 400."""
from __future__ import annotations





class FilterError(ValueError):
    """An invalid filter. The message says where (e.g. "AND[0].OR[1]") and what to
    change; the API returns it as a 400."""
