"""The one error type for bad input: it names what was wrong and where."""

from __future__ import annotations


class InputError(ValueError):
    """Bad user input (layouts, suites, names, options). The CLI prints it on one line and exits 2.

    `where` names the place (a file and line, a layout id), `field` the offending field.
    """

    def __init__(self, message: str, *, where: str | None = None, field: str | None = None):
        self.message = message
        self.where = where
        self.field = field
        prefix = ""
        if where:
            prefix += f"{where}: "
        if field:
            prefix += f"{field}: "
        super().__init__(prefix + message)
