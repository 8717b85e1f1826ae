"""Sphinx configuration of notifier's documentation (``make docs``)."""

from __future__ import annotations

import os
import sys

# The package is importable from the checkout itself, installed or not.
sys.path.insert(0, os.path.abspath(".."))

from notifier import __version__  # noqa: E402

project = "notifier"
author = "the notifier developers"
copyright = "the notifier developers"  # noqa: A001 (Sphinx's name for it)
version = release = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
]

# Nothing is fetched while building: the site builds offline, warning-free.
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}
intersphinx_disabled_reftypes = ["*"]

exclude_patterns = ["_build", "*.png"]
root_doc = "index"
language = "en"
nitpicky = False

autodoc_member_order = "bysource"
autodoc_typehints = "description"
# Twisted writes its docstrings in epytext: an override does not show them.
autodoc_inherit_docstrings = False
autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
}
# Names in signatures that Sphinx cannot resolve are written as they are.
autodoc_type_aliases: dict[str, str] = {}

html_theme = "alabaster"
html_title = f"notifier {release}"
html_static_path = ["_static"]
html_theme_options = {
    "description": "Real-time notifications for PHP and Drupal sites",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "240px",
}
pygments_style = "sphinx"
