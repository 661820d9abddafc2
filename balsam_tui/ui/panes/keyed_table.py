"""A DataTable kept in step with a list of keyed rows, cursor and view held still.

``show_rows`` is called after every snapshot. It touches only what changed: cells
whose text differs are updated in place, rows that left are removed, rows that
arrived are added and put in order. Row keys are the records' ids, so the cursor
stays on the same job or task however the rows around it move, and the row keeps
its line on the screen.

Traps, from DataTable itself: ``remove_row`` costs as much as the whole table, so
when most rows change (a new page) the table is rebuilt instead; and after
``sort`` the cursor keeps its index, not its row, so it is put back by key.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, RowDoesNotExist

Row = tuple[str, tuple[Text, ...]]

ORDER_COLUMN = "id"
"""Every keyed table has an ``id`` column whose text is the row's key."""


class KeyedTable(DataTable):
    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes, cursor_type="row", zebra_stripes=True)
        self._shown: dict[str, tuple[Text, ...]] = {}
        self._order: list[str] = []

    @property
    def cursor_key(self) -> str | None:
        """The key of the row under the cursor, or None when the table is empty."""
        if not self.row_count:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except (CellDoesNotExist, RowDoesNotExist):
            return None

    @property
    def keys(self) -> list[str]:
        """The row keys in display order."""
        return list(self._order)

    def reset_columns(self, columns: Sequence[tuple[str, str, int | None]]) -> None:
        """Replace every column with (key, label, width); rows are dropped too."""
        self.clear(columns=True)
        self._shown.clear()
        self._order.clear()
        for key, label, width in columns:
            self.add_column(label, key=key, width=width)

    def show_rows(self, rows: Sequence[Row], *, keep: str | None = None) -> None:
        """Show exactly ``rows``, in that order; the cursor stays on its row.

        ``keep`` names the row the cursor should be on afterwards (by default the
        one it is on now); if that row is gone, the cursor keeps its index.
        """
        keep = keep if keep is not None else self.cursor_key
        old_index = self.cursor_row
        old_line = self.cursor_row - round(self.scroll_y)
        wanted = dict(rows)
        order = [key for key, _ in rows]
        gone = [key for key in self._order if key not in wanted]

        if len(gone) > max(len(self._order) // 4, 16):
            self._rebuild(rows)
        else:
            self._patch(rows, gone)
            if self._order != order:
                position = {key: n for n, key in enumerate(order)}
                self.sort(ORDER_COLUMN, key=lambda cell: position[cell.plain])
        self._order = order

        if not order:
            return
        index = order.index(keep) if keep in wanted else min(old_index, len(order) - 1)
        self.move_cursor(row=index, animate=False, scroll=False)
        if index != old_index:
            # Keep the cursor's row on the same screen line, as a pager would.
            target = max(index - old_line, 0)
            self.call_after_refresh(self.scroll_to, y=target, animate=False)
        self.call_after_refresh(self._cursor_into_view)

    def _cursor_into_view(self) -> None:
        if self.row_count:
            self.move_cursor(row=self.cursor_row, animate=False, scroll=True)

    def _rebuild(self, rows: Sequence[Row]) -> None:
        self.clear()
        self._shown.clear()
        for key, cells in rows:
            self.add_row(*cells, key=key)
            self._shown[key] = cells

    def _patch(self, rows: Sequence[Row], gone: list[str]) -> None:
        for key in gone:
            self.remove_row(key)
            del self._shown[key]
        columns = [column.key for column in self.ordered_columns]
        for key, cells in rows:
            before = self._shown.get(key)
            if before is None:
                self.add_row(*cells, key=key)
            elif before is not cells and before != cells:
                for column, old, new in zip(columns, before, cells, strict=False):
                    if old != new:
                        self.update_cell(key, column, new)
            self._shown[key] = cells
