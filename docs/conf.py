"""Sphinx configuration of the django-ftpserver-suite documentation."""

import os
import sys
from pathlib import Path

import django
from docutils import nodes
from sphinx.transforms import SphinxTransform

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
# The apps for autodoc and the generated references; _ext for our extensions.
sys.path[:0] = [str(ROOT), str(DOCS / "_ext")]
# A minimal project of its own: the pages never depend on the test settings.
os.environ["DJANGO_SETTINGS_MODULE"] = "docs_settings"
django.setup()

project = "django-ftpserver-suite"
author = "The django-ftpserver-suite authors"
copyright = "2026, " + author  # noqa: A001 (Sphinx's name)

extensions = [
    "sphinx.ext.autodoc",
    "settings_reference",
    "checks_reference",
    "commands_reference",
    "code_reference",
]

root_doc = "index"
exclude_patterns = ["_build", "_ext"]
html_theme = "furo"
html_title = "django-ftpserver-suite"
html_static_path = []
# "::" blocks are mostly shell commands: not Python, left plain. Python
# examples say ".. code-block:: python".
highlight_language = "none"
# Cross-reference warnings are errors with -W: a broken :doc: or :ref: fails.
nitpicky = False
autodoc_member_order = "bysource"
autodoc_default_options = {"members": False}


class DropContents(SphinxTransform):
    """Drop ``.. contents::`` topics: Furo lists a page's sections beside it.

    The directive stays in the sources for those who read the .rst files on
    GitHub, where it is the only table of contents.
    """

    default_priority = 999

    def apply(self, **kwargs):
        for topic in list(self.document.findall(nodes.topic)):
            if "contents" in topic["classes"]:
                topic.parent.remove(topic)


def setup(app):
    app.add_post_transform(DropContents)
