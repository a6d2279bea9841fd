"""mkdocs hooks (mkdocs.yml `hooks:`): notebook pages that load nothing from the network.

nbconvert's HTML template, which mkdocs-jupyter renders the notebooks with, adds `<script>`s
that load MathJax 2 and mermaid from cdnjs and configure MathJax 2. The site ships MathJax 3
itself (javascripts/mathjax.js configures it to typeset the notebooks' Markdown cells too), so
these scripts are removed from every notebook page's content.

mkdocs-jupyter builds a notebook page's table of contents from a Markdown conversion of the
notebook, in which a heading's code spans vanish ("4. `jit`, `vmap`" becomes "4. , ,", with an
id the page does not have): the table of contents is rebuilt here from the rendered headings,
their code kept (as mkdocs-material's typeset plugin does for Markdown pages). Their
permalinks become mkdocs' `headerlink`s, which the search index leaves out of titles.

The "Open in Colab" badges (in the notebooks and on the notebooks page) are images on
colab.research.google.com; the site shows its own copy, docs/assets/open-in-colab.svg.
"""

from __future__ import annotations

import re
from typing import Any

from mkdocs.structure.toc import get_toc
from mkdocs.utils import get_relative_url

COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
LOCAL_BADGE = "assets/open-in-colab.svg"

#: A <script> element that loads from the network (or from an empty URL: nbconvert's MathJax
#: loader when none is configured), nbconvert's MathJax 2 configuration, or a module script
#: importing from the network (mermaid).
_NETWORK_SCRIPT = re.compile(
    r"<script\b[^>]*\bsrc=[\"']?(?:https?:)?//[^>]*>\s*</script>"
    r"|<script\b[^>]*\bsrc=(?:\"\s*\"|'\s*')[^>]*>\s*</script>"
    r"|<script\b[^>]*type=[\"']text/x-mathjax-config[\"'][^>]*>.*?</script>"
    r"|<script\b[^>]*type=[\"']module[\"'][^>]*>(?:(?!</script>).)*?"
    r"(?:https?:)?//(?:(?!</script>).)*?</script>",
    re.S | re.I,
)


_HEADING = re.compile(r"<h([1-6])\b[^>]*\bid=\"([^\"]+)\"[^>]*>(.*?)</h\1>", re.S | re.I)
_PERMALINK = re.compile(r"<a class=\"anchor-link\" (href=\"#[^\"]*\")>")


def on_page_content(html: str, page: Any, **kwargs: Any) -> str:
    html = html.replace(COLAB_BADGE, get_relative_url(LOCAL_BADGE, page.url))
    if page.file.src_uri.endswith(".ipynb"):
        html = _NETWORK_SCRIPT.sub("", html)
        html = _PERMALINK.sub(r'<a class="headerlink" \1>', html)
        page.toc = _toc_of(html)
    return html


def _toc_of(html: str) -> Any:
    """The table of contents of rendered HTML: its headings, nested by level, code kept."""
    roots: list[dict[str, Any]] = []
    stack: list[dict[str, Any]] = []
    typeset = {}
    for level, anchor, inner in _HEADING.findall(html):
        inner = re.sub(r"<a class=\"headerlink\"[^>]*>.*?</a>", "", inner).strip()
        token = {
            "level": int(level),
            "id": anchor,
            "name": re.sub(r"<[^>]+>", "", inner),
            "children": [],
        }
        typeset[anchor] = inner
        while stack and stack[-1]["level"] >= token["level"]:
            stack.pop()
        (stack[-1]["children"] if stack else roots).append(token)
        stack.append(token)
    toc = get_toc(roots)  # type: ignore[arg-type]
    pending = list(toc.items)
    while pending:
        item = pending.pop()
        item.typeset = {"title": typeset[item.id]}  # what mkdocs-material's toc shows
        pending.extend(item.children)
    return toc
