"""Sphinx configuration of the API reference (docs/api).

Built offline, warnings as errors, by tests/test_docs.py:
``python -m sphinx -W --keep-going -b html docs/api build/api``. Only Sphinx's own
extensions are used; no intersphinx (it would download inventories).
"""

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

import specreg  # noqa: E402

project = "specreg"
author = "The specreg authors"
copyright = "2026, The specreg authors"
version = release = specreg.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
napoleon_google_docstring = True
napoleon_numpy_docstring = False
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}
# Treat `x` as code, as the docstrings mean it.
default_role = "code"

exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path: list[str] = []


# The docstrings write their maths in plain text: |A0 − Â0|, (B, C, *spatial),
# Σ_b γ·|W0 − Ŵ0|. To reStructuredText a bar starts a substitution and a star emphasis, so
# both are escaped before rendering, except in ``literals``, `roles`, literal blocks (after
# "::") and doctests, which keep them as written. Everything else reStructuredText objects to
# (indentation, a broken role, a section napoleon cannot parse, a module that fails to
# import, a documented name that no longer exists) still fails the build.
_SPECIAL = re.compile(r"(?<!\\)([*|])")
# kept as written: literals, roles, interpreted text, **strong** and *emphasis* that close on the line
_MARKUP = re.compile(r"(``.+?``|:[\w:.-]+:`[^`]*`|`[^`]*`_{0,2}|\*\*[^*\s][^*]*?(?<!\s)\*\*"
                     r"|(?<![\w*])\*[^*\s][^*]*?(?<![\s*])\*(?![\w*]))")
_BULLET = re.compile(r"^(\s*[*-] )")


def _escape_prose(line: str) -> str:
    bullet = _BULLET.match(line)
    head, line = (bullet.group(1), line[bullet.end():]) if bullet else ("", line)
    parts = _MARKUP.split(line)
    return head + "".join(p if i % 2 else _SPECIAL.sub(r"\\\1", p) for i, p in enumerate(parts))


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def escape_plain_maths(app, what, name, obj, options, lines: list[str]) -> None:
    literal_indent = None  # indentation of the paragraph that opened a literal block
    in_doctest = False
    for i, line in enumerate(lines):
        stripped = line.strip()
        if literal_indent is not None:
            if not stripped or _indent(line) > literal_indent:
                continue
            literal_indent = None
        if in_doctest:
            if stripped:
                continue
            in_doctest = False
        if stripped.startswith(">>>"):
            in_doctest = True
            continue
        if stripped.startswith(".. "):  # a directive line: its arguments are not prose
            continue
        lines[i] = _escape_prose(line)
        if stripped.endswith("::"):
            literal_indent = _indent(line)


def setup(app):
    app.connect("autodoc-process-docstring", escape_plain_maths)
