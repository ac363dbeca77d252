"""The settings reference, generated from ftpserver_core/conf.py's DEFAULTS.

``conf.py`` is the one source of truth: each key of ``DEFAULTS`` with its
default and the comment lines above it. A key with no comment of its own
shares the comment of the key before it (``HOST`` and ``PORT``). A comment
that starts with ``---`` opens a part of the file: its first line names the
part (and the module) and is left out, unless it goes on into the setting's
own sentence.

``.. ftpserver-settings::`` renders one ``.. setting::`` entry per comment
(so ``:setting:`FTPSERVER_PORT``` links to it from any page).
"""

import ast
import io
import re
import tokenize
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import checks_reference
from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective

from ftpserver_core.conf import DEFAULTS

CONF = Path(__file__).resolve().parents[2] / "ftpserver_core" / "conf.py"
PREFIX = "FTPSERVER_"


@dataclass
class Entry:
    """Settings documented by one comment."""

    names: list = field(default_factory=list)
    defaults: list = field(default_factory=list)
    comment: list = field(default_factory=list)


def _comments(source):
    """Return {line number: comment text} of the lines that are only a comment."""
    comments = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT and not token.line[: token.start[1]].strip():
            comments[token.start[0]] = token.string[1:].strip()
    return comments


def _defaults_dict(tree):
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and any(getattr(t, "id", None) == "DEFAULTS" for t in node.targets)
            and isinstance(node.value, ast.Dict)
        ):
            return node.value
    raise ValueError(f"No DEFAULTS = {{...}} dict in {CONF}.")


def read_settings(path=CONF):
    """Return the Entry list of ``path``'s DEFAULTS, in source order."""
    source = path.read_text()
    comments = _comments(source)
    entries = []
    defaults = _defaults_dict(ast.parse(source))
    for key, value in zip(defaults.keys, defaults.values, strict=True):
        block = []
        line = key.lineno - 1
        while line in comments:
            block.insert(0, comments[line])
            line -= 1
        if block and block[0].startswith("---"):
            header = block.pop(0)[3:].strip()
            rest = re.split(r"\):|:", header, maxsplit=1)
            # A header that goes on into its first setting's sentence.
            if len(rest) == 2 and not rest[1].strip().endswith("."):
                block.insert(0, rest[1].strip())
        default = ast.get_source_segment(source, value)
        if block or not entries:
            entries.append(Entry(comment=block))
        entries[-1].names.append(PREFIX + key.value)
        entries[-1].defaults.append(default)
    return entries


def _default_text(name, source):
    """Return the rst of a default: its source, and its value when that differs."""
    text = f"``{source}``"
    value = DEFAULTS[name.removeprefix(PREFIX)]
    if isinstance(value, int) and not isinstance(value, bool) and repr(value) != source:
        text += f" ({value:,})"
    return text


def _sentence(text):
    return text[:1].upper() + text[1:]


def render(entries):
    """Return the rst lines of ``entries``."""
    checks = defaultdict(list)
    for check_id, names in checks_reference.settings_by_id(
        checks_reference.meanings_in_code()
    ).items():
        for name in names:
            checks[name].append(check_id)
    lines = []
    for entry in entries:
        lines.append(f".. setting:: {entry.names[0]}")
        lines += [f"             {name}" for name in entry.names[1:]]
        lines.append("")
        for name, default in zip(entry.names, entry.defaults, strict=True):
            label = f"``{name}``: default " if len(entry.names) > 1 else "Default: "
            lines += [f"   | {label}{_default_text(name, default)}"]
        checked = sorted(
            {check_id for n in entry.names for check_id in checks.get(n, ())},
            key=checks_reference.order,
        )
        if checked:
            ids = ", ".join(f"``ftpserver_core.{c}``" for c in checked)
            lines.append(f"   | Checked by: {ids} (:doc:`checks`)")
        lines.append("")
        text = " ".join(entry.comment)
        if text:
            lines += [f"   {_sentence(text)}", ""]
    return lines


class SettingsDirective(SphinxDirective):
    """Render every FTPSERVER_* setting of conf.py."""

    has_content = False

    def run(self):
        self.env.note_dependency(str(CONF))
        container = nodes.container(classes=["ftpserver-settings"])
        self.state.nested_parse(
            StringList(render(read_settings()), source=str(CONF)), 0, container
        )
        return container.children


def setup(app):
    app.add_object_type(
        "setting", "setting", indextemplate="pair: %s; setting", objname="setting"
    )
    app.add_directive("ftpserver-settings", SettingsDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
