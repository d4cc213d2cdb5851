"""Escaping of user-supplied text for every output format the report writes.

Prompts, labels, suite notes, option values, versions and metric labels come from users and
end up in HTML, Markdown, LaTeX and CSV files. Every writer goes through these functions, so
a prompt holding `<script>`, a `|`, a `%` or a newline shows as text and never changes the
structure of the file it lands in.
"""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    import pandas as pd

_NEWLINES = re.compile(r"[\r\n\u2028\u2029\x0b\x0c\x85]+")
_BLANKS = re.compile(r"[ \t]{2,}")
_MARKDOWN_SPECIAL = set("\\`*_[]|~$")
"""Characters that start Markdown markup anywhere in a line (line-start ones cannot occur:
every writer puts its own text first)."""
_MARKDOWN_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}",
                  "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}"}
_LATEX_SYMBOLS = {"↑": r"$\uparrow$", "↓": r"$\downarrow$", "±": r"$\pm$"}
CSV_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def one_line(text: Any) -> str:
    """The text on one line: every line break becomes a space (no injected rows or lines)."""
    return _NEWLINES.sub(" ", str(text))


def html_text(text: Any) -> str:
    """Text for HTML element content and quoted attribute values."""
    return html.escape(str(text), quote=True)


def url_path(*parts: str) -> str:
    """A relative URL from path parts, each percent-encoded (a label may hold `#`, `?`, `%`)."""
    return "/".join(part if part in (".", "..") else quote(part, safe="") for part in parts)


def markdown_text(text: Any) -> str:
    """Text for a Markdown line or table cell: one line, no markup, no raw HTML, no `|`."""
    flat = one_line(text)
    out = []
    for i, ch in enumerate(flat):
        if ch in _MARKDOWN_ENTITIES:
            out.append(_MARKDOWN_ENTITIES[ch])
        elif ch == "_" and _inside_word(flat, i):
            out.append(ch)  # an underscore inside a word never starts emphasis: keep `k_miou` readable
        elif ch in _MARKDOWN_SPECIAL:
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def _inside_word(text: str, i: int) -> bool:
    return 0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()


def latex_text(text: Any) -> str:
    """Text for LaTeX text mode: specials escaped, on one line (a blank line ends a paragraph
    and breaks `\\caption{}`), the report's arrows as math symbols."""
    flat = _BLANKS.sub(" ", one_line(text))
    out = []
    for ch in flat:
        out.append(_LATEX_SPECIAL.get(ch) or _LATEX_SYMBOLS.get(ch) or ch)
    return "".join(out)


def latex_comment(text: Any) -> str:
    """A `%` comment line: a newline in the text would end the comment and run the rest."""
    return "% " + latex_text(text)


def csv_cell(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula gets a leading apostrophe;
    numbers and other text pass unchanged (numeric columns stay numeric)."""
    if isinstance(value, str) and value.startswith(CSV_FORMULA_START):
        return "'" + value
    return value


def csv_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of `frame` with every text cell passed through `csv_cell` (and its headers)."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype == object or str(out[column].dtype) in ("string", "str"):
            out[column] = out[column].map(csv_cell)
    out.columns = [csv_cell(str(c)) for c in out.columns]
    return out
