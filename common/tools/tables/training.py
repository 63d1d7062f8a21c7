"""Tables of training records."""

from __future__ import annotations

from common.tools.tables import Rendered, Store, caption, markdown, number, table, with_range  # noqa: F401
