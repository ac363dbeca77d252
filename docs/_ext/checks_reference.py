"""The system checks reference: every check id of the code, with its meaning.

The ids are found in the code (every string constant ``ftpserver_core.XNNN``
in the apps' modules), so a new check cannot be missed. Each needs a
meaning: from a dict in ``ftpserver_core.checks`` keyed by ids, or from the
directive's content (``E001: meaning`` lines, indented continuation lines).
An id of the code without a meaning, or a meaning of an id the code does
not have, is a warning, which the ``-W`` build turns into an error.
``ERROR_IDS`` adds the settings each id validates.
"""

import ast
import re
from collections import defaultdict
from pathlib import Path

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util import logging
from sphinx.util.docutils import SphinxDirective

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ftpserver_core", "ftpadmin")
ID = re.compile(r"^ftpserver_core\.([CEWI]\d{3})$")
logger = logging.getLogger(__name__)


def ids_in_code(root=ROOT):
    """Return {short id: [module paths]} of every check id in the apps' code."""
    found = defaultdict(list)
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    match = ID.match(node.value)
                    if match:
                        module = str(path.relative_to(root))
                        if module not in found[match[1]]:
                            found[match[1]].append(module)
    return dict(found)


def meanings_in_code():
    """Return {short id: meaning} of the id-keyed dicts in ftpserver_core.checks."""
    from ftpserver_core import checks

    meanings = {}
    for value in vars(checks).values():
        if (
            isinstance(value, dict)
            and value
            and all(isinstance(k, str) and ID.match(k) for k in value)
            and all(isinstance(v, str) for v in value.values())
        ):
            meanings.update({ID.match(k)[1]: v for k, v in value.items()})
    return meanings


def settings_by_id(meanings=None):
    """Return {short id: [FTPSERVER_ names]}: ERROR_IDS, and the names a meaning says.

    A meaning names a setting in full (``FTPSERVER_PORT``) or, in a list that
    began with one, by its bare upper-case name (``MAX_CONNECTIONS``); the
    ``Checked by`` lines of the settings reference come from here too.
    """
    from ftpserver_core.checks import ERROR_IDS
    from ftpserver_core.conf import DEFAULTS

    names = defaultdict(list)
    for name, check_id in ERROR_IDS.items():
        names[ID.match(check_id)[1]].append(f"FTPSERVER_{name}")
    for check_id, meaning in (meanings or {}).items():
        for name in DEFAULTS:
            full = f"FTPSERVER_{name}"
            # A bare one-word name (HOST in "HOST:PORT") is not a setting's.
            prefix = "(FTPSERVER_)?" if "_" in name else "FTPSERVER_"
            if full not in names[check_id] and re.search(
                rf"(?<![A-Z0-9_]){prefix}{name}(?![A-Z0-9_])", meaning
            ):
                names[check_id].append(full)
    return {check_id: found for check_id, found in names.items() if found}


def parse_content(lines):
    """Return {short id: meaning} of ``E001: text`` lines (indented lines go on).

    Meanings are plain text, as those of the code.
    """
    meanings = {}
    current = None
    for line in lines:
        match = re.match(r"^([CEWI]\d{3}):\s*(.*)$", line)
        if match:
            current = match[1]
            meanings[current] = match[2].strip()
        elif line.strip() and current and line[:1].isspace():
            meanings[current] += " " + line.strip()
        elif line.strip():
            raise ValueError(f"Expected 'E001: meaning', got {line!r}.")
    return meanings


def to_rst(text):
    """Return plain ``text`` as reStructuredText, its settings linked."""
    from ftpserver_core.conf import DEFAULTS

    text = re.sub(r"([\\*`|])", r"\\\1", text)
    text = re.sub(r"(\w)_(?=\W|$)", r"\1\\_", text)

    def link(match):
        name = match[1]
        return f":setting:`FTPSERVER_{name}`" if name in DEFAULTS else match[0]

    return re.sub(r"\bFTPSERVER_([A-Z][A-Z0-9_]*[A-Z0-9])\b", link, text)


def order(check_id):
    # Errors, then warnings (Django's levels), each by number.
    return ("CEWI".index(check_id[0]), check_id[1:])


class ChecksDirective(SphinxDirective):
    """Render every check id of the code with its meaning."""

    has_content = True

    def run(self):
        try:
            meanings = parse_content(self.content)
        except ValueError as exc:
            return [self.state.document.reporter.error(str(exc), line=self.lineno)]
        meanings.update(meanings_in_code())
        in_code = ids_in_code()
        for package in PACKAGES:
            for path in (ROOT / package).rglob("*.py"):
                self.env.note_dependency(str(path))
        for check_id in sorted(set(in_code) - set(meanings)):
            logger.warning(
                "ftpserver_core.%s (in %s) has no meaning in docs/checks.rst.",
                check_id,
                ", ".join(in_code[check_id]),
                location=(self.env.docname, self.lineno),
            )
        for check_id in sorted(set(meanings) - set(in_code)):
            logger.warning(
                "ftpserver_core.%s is documented but no code uses it.",
                check_id,
                location=(self.env.docname, self.lineno),
            )
        settings = settings_by_id(meanings)
        lines = [
            ".. list-table::",
            "   :header-rows: 1",
            "   :widths: 12 60 28",
            "",
            "   * - Id",
            "     - Meaning",
            "     - Settings",
        ]
        for check_id in sorted(set(in_code) | set(meanings), key=order):
            names = ", ".join(f":setting:`{n}`" for n in settings.get(check_id, []))
            lines += [
                f"   * - ``ftpserver_core.{check_id}``",
                f"     - {to_rst(meanings.get(check_id, ''))}",
                f"     - {names}",
            ]
        holder = nodes.container(classes=["ftpserver-checks"])
        self.state.nested_parse(StringList(lines, source=self.env.docname), 0, holder)
        return holder.children


def setup(app):
    app.add_directive("ftpserver-checks", ChecksDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
