"""The management commands reference: each command's ``--help``, as it prints.

``.. ftpserver-commands::`` renders every command of ``ftpserver_core`` and
``ftpadmin`` (found as Django finds them, so a new command is listed), each
under its own heading with its help text and its usage.
"""

import os
from contextlib import contextmanager

from django.core.management import get_commands, load_command_class
from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles

APPS = ("ftpserver_core", "ftpadmin")
# Options every Django command has: said once on the page, not per command.
COMMON = (
    "--version",
    "--verbosity",
    "--settings",
    "--pythonpath",
    "--traceback",
    "--no-color",
    "--force-color",
    "--skip-checks",
)


@contextmanager
def _columns(width):
    """Make argparse wrap at ``width`` columns, whatever the terminal."""
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)
    try:
        yield
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def commands():
    """Return [(app, name)] of our commands, by app then name."""
    found = [(app, name) for name, app in get_commands().items() if app in APPS]
    return sorted(found, key=lambda item: (APPS.index(item[0]), item[1]))


def command_help(app, name, prog="manage.py"):
    """Return (help text, --help output without Django's common options)."""
    command = load_command_class(app, name)
    with _columns(88):
        parser = command.create_parser(prog, name)
        for action in list(parser._actions):
            if any(option in COMMON for option in action.option_strings):
                parser._remove_action(action)
                for group in parser._action_groups:
                    if action in group._group_actions:
                        group._group_actions.remove(action)
        usage = parser.format_help()
    return str(command.help or ""), usage.rstrip()


class CommandsDirective(SphinxDirective):
    """Render the help of every command of the two apps, a section each."""

    # The underline of the commands' headings: one level below the page's.
    option_spec = {"underline": directives.unchanged}

    def run(self):
        underline = self.options.get("underline", "-")
        lines = []
        for app, name in commands():
            _text, usage = command_help(app, name)
            title = f"``{name}``"
            lines += [f".. _command-{name}:", "", title, underline * len(title), ""]
            lines += [f"From ``{app}``.", "", ".. code-block:: text", ""]
            lines += [f"   {line}".rstrip() for line in usage.splitlines()]
            lines.append("")
        holder = nodes.section()
        nested_parse_with_titles(
            self.state, StringList(lines, source=self.env.docname), holder
        )
        return holder.children


def setup(app):
    app.add_directive("ftpserver-commands", CommandsDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
