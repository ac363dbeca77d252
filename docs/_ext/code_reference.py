"""Tables rendered from the code, so the pages say what the code does.

- ``.. ftpserver-reasons:: LOGIN_FAILURE_REASONS``: a tuple of
  ``ftpserver_core.signals`` with the comment beside each value.
- ``.. ftpserver-audit-events::``: every ``AuditEvent.Event`` with its label
  and the signal the built-in receivers record it from.
- ``.. ftpserver-model-fields:: ftpserver_core.models.AuditEvent``: a model's
  fields with their verbose names and types.
"""

import ast
import io
import tokenize
from pathlib import Path

from django.apps import apps
from docutils import nodes
from docutils.parsers.rst import directives
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective

SIGNALS = Path(__file__).resolve().parents[2] / "ftpserver_core" / "signals.py"


def tuple_with_comments(name, path=SIGNALS):
    """Return [(value, comment)] of the tuple ``name`` in ``path``'s source."""
    source = path.read_text()
    trailing = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT and token.line[: token.start[1]].strip():
            trailing[token.start[0]] = token.string[1:].strip()
    for node in ast.parse(source).body:
        if (
            isinstance(node, ast.Assign)
            and any(getattr(t, "id", None) == name for t in node.targets)
            and isinstance(node.value, ast.Tuple)
        ):
            return [
                (element.value, trailing.get(element.end_lineno, ""))
                for element in node.value.elts
            ]
    raise ValueError(f"No tuple {name} in {path}.")


class _Rendered(SphinxDirective):
    def render(self, lines):
        holder = nodes.container()
        self.state.nested_parse(StringList(lines, source=self.env.docname), 0, holder)
        return holder.children


class ReasonsDirective(_Rendered):
    """Render a reason tuple of ftpserver_core.signals as a list."""

    required_arguments = 1

    def run(self):
        self.env.note_dependency(str(SIGNALS))
        lines = []
        for value, comment in tuple_with_comments(self.arguments[0]):
            lines.append(f"- ``{value}``" + (f": {comment}" if comment else ""))
        return self.render(lines)


class AuditEventsDirective(_Rendered):
    """Render every audit event with the signal it is recorded from."""

    def run(self):
        from ftpserver_core import signals
        from ftpserver_core.models import AuditEvent
        from ftpserver_core.receivers import RECEIVERS

        names = {id(s): n for n, s in signals.ALL_SIGNALS.items()}
        recorded = {}
        for signal, receiver in RECEIVERS.items():
            event = _event_of(receiver)
            if event is not None:
                recorded.setdefault(event, []).append(f"``{names[id(signal)]}``")
        lines = [
            ".. list-table::",
            "   :header-rows: 1",
            "",
            "   * - ``event``",
            "     - Shown as",
            "     - Recorded from",
        ]
        for value, label in AuditEvent.Event.choices:
            lines += [
                f"   * - ``{value}``",
                f"     - {label}",
                f"     - {', '.join(recorded.get(value, [])) or '-'}",
            ]
        return self.render(lines)


def _event_of(receiver):
    """Return the audit event a built-in receiver records."""
    from ftpserver_core import receivers
    from ftpserver_core.models import AuditEvent

    for cell in receiver.__closure__ or ():
        try:
            value = cell.cell_contents
        except ValueError:
            continue
        if isinstance(value, AuditEvent.Event):
            return value.value
    # The receivers written out as functions name their event in the code.
    source = Path(receivers.__file__).read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and node.name == receiver.__name__:
            for inner in ast.walk(node):
                if (
                    isinstance(inner, ast.Attribute)
                    and getattr(inner.value, "id", None) == "Event"
                ):
                    return AuditEvent.Event[inner.attr].value
    return None


class ModelFieldsDirective(_Rendered):
    """Render the concrete fields of a model."""

    required_arguments = 1
    option_spec = {"exclude": directives.unchanged}

    def run(self):
        exclude = set(self.options.get("exclude", "").replace(",", " ").split())
        module, _, name = self.arguments[0].rpartition(".")
        app_label = module.split(".")[0]
        model = apps.get_model(app_label, name)
        lines = [
            ".. list-table::",
            "   :header-rows: 1",
            "",
            "   * - Field",
            "     - Name in the admin",
            "     - Type",
            "     - Help in the admin",
        ]
        for field in model._meta.concrete_fields:
            if field.name in exclude:
                continue
            lines += [
                f"   * - ``{field.name}``",
                f"     - {field.verbose_name}",
                f"     - {field.get_internal_type()}"
                + (", may be blank" if field.null or field.blank else ""),
                f"     - {field.help_text}",
            ]
        return self.render(lines)


def setup(app):
    app.add_directive("ftpserver-reasons", ReasonsDirective)
    app.add_directive("ftpserver-audit-events", AuditEventsDirective)
    app.add_directive("ftpserver-model-fields", ModelFieldsDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
