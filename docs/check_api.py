"""MkDocs hook: the API reference documents every name `personactl.__all__` exports, each once, and nothing else.

The pages under api/ list their names as `::: personactl.NAME` lines; a name exported without a page, or a page
naming something the package does not export, fails the build.
"""

from __future__ import annotations

import re
from collections import Counter

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import Files

import personactl

DIRECTIVE = re.compile(r"^::: personactl\.(\w+)\s*$", re.M)


def on_files(files: Files, config) -> Files:
    pages = [f for f in files.documentation_pages() if f.src_uri.startswith("api/")]
    named = Counter(name for f in pages for name in DIRECTIVE.findall(f.content_string))
    problems = [f"{name} is exported but on no api/ page" for name in sorted(set(personactl.__all__) - set(named))]
    problems += [f"{name} is on {n} api/ pages" for name, n in sorted(named.items()) if n > 1]
    problems += [f"{name} is documented but not in personactl.__all__" for name in sorted(set(named) - set(personactl.__all__))]
    if problems:
        raise PluginError("API reference: " + "; ".join(problems))
    return files
