"""Check the built docs site (``make docs`` runs it after ``mkdocs build``).

    python scripts/check_site.py [SITE_DIR]

Fails, naming the page and what it found, when:

* a page loads anything from the network: a ``<script src>``, ``<link href>`` (stylesheets,
  fonts, icons, preloads), ``<img src>``, ``<iframe>``/``<source>``/``<video>`` ``src``, or a
  stylesheet's ``url()``/``@import``, pointing at ``http(s)://`` or ``//``; links (``<a
  href>``) to other sites are fine;
* MathJax is not shipped with the site, or a page with maths (arithmatex's ``\\(``/``\\[`` on
  the Markdown pages, ``$``/``$$`` in the notebooks' Markdown cells) does not load it, or a
  notebook page still carries nbconvert's MathJax 2 configuration;
* a builder's local path (``/work/``, ``/root/``, ``/home/``, ``/Users/``) appears
  in a page, in the search index or in a notebook offered for download;
* a heading whose text has code (``<code>``) is missing from the table of contents or loses
  its code there, a table-of-contents link points at no heading of its page, or the search
  index loses the code's text from that section's title. (Page titles, ``<h1>``, are not in
  the table of contents; mkdocstrings' API headings are left out: it sets their labels.)

Plain standard library (html.parser): the site is read as text, nothing is executed.
"""

from __future__ import annotations

import html
import json
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

MATHJAX = "javascripts/mathjax/tex-mml-chtml.js"
MATHJAX_CONFIG = "javascripts/mathjax.js"
LOCAL_PATH = re.compile(r"(?<![\w.])(?:/work/|/root/|/home/|/Users/|[A-Z]:\\\\?Users)")
NETWORK = re.compile(r"^\s*(?:https?:)?//", re.I)
#: (tag, attribute) pairs whose URL the browser fetches while showing the page.
LOADS = {
    ("script", "src"),
    ("img", "src"),
    ("iframe", "src"),
    ("source", "src"),
    ("video", "src"),
    ("audio", "src"),
    ("embed", "src"),
    ("object", "data"),
    ("image", "href"),
    ("use", "href"),
}
#: <link rel=...> values that make the browser fetch the href.
LINK_LOADS = {"stylesheet", "preload", "modulepreload", "prefetch", "icon", "manifest", "font"}
CSS_NETWORK = re.compile(r"""(?:url\(\s*["']?|@import\s+["'])\s*(?:https?:)?//""", re.I)


class _Page(HTMLParser):
    """What the checks need from one page: fetched URLs, scripts, headings, the toc's links."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.fetched: list[str] = []
        self.scripts: list[str] = []
        self.script_types: list[str] = []
        self.headings: dict[str, str] = {}  # id -> inner HTML
        self.api_headings: set[str] = set()  # ids of mkdocstrings' object headings
        self.titles: set[str] = set()  # ids of <h1>s: the page's title, not in its contents
        self.toc: dict[str, str] = {}  # "#id" -> inner HTML of the toc link
        self._capture: tuple[str, str, list[str]] | None = None  # (kind, key, parts)
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        for (t, attribute), value in ((pair, a.get(pair[1])) for pair in LOADS):
            if t == tag and value is not None and NETWORK.match(value):
                self.fetched.append(f"<{tag} {attribute}={value!r}>")
        if tag == "link" and LINK_LOADS & set(a.get("rel", "").lower().split()):
            if NETWORK.match(a.get("href", "")):
                self.fetched.append(f"<link rel={a.get('rel')!r} href={a.get('href')!r}>")
        if "style" in a and CSS_NETWORK.search(a["style"]):
            self.fetched.append(f"<{tag} style={a['style'][:80]!r}>")
        if tag == "script":
            if "src" in a and not a["src"].strip():
                self.fetched.append("<script src=''> (an empty URL: the page itself)")
            self.scripts.append(a.get("src", ""))
            self.script_types.append(a.get("type", ""))
        if self._capture is not None:
            self._capture[2].append(self.get_starttag_text() or "")
            self._depth += 1
            return
        if re.fullmatch(r"h[1-6]", tag) and a.get("id"):
            self._capture, self._depth = ("heading", a["id"], []), 1
            if "doc-heading" in a.get("class", "").split():
                self.api_headings.add(a["id"])
            if tag == "h1":
                self.titles.add(a["id"])
        elif tag == "a" and "md-nav__link" in a.get("class", "") and "#" in a.get("href", ""):
            self._capture, self._depth = ("toc", "#" + a["href"].split("#", 1)[1], []), 1

    def handle_endtag(self, tag: str) -> None:
        if self._capture is None:
            return
        self._depth -= 1
        if self._depth > 0:
            self._capture[2].append(f"</{tag}>")
            return
        kind, key, parts = self._capture
        self._capture = None
        (self.headings if kind == "heading" else self.toc).setdefault(key, "".join(parts))

    def handle_data(self, data: str) -> None:
        if self._capture is not None:
            self._capture[2].append(html.escape(data, quote=False))


def _text(fragment: str) -> str:
    """The visible text of an HTML fragment, without the permalink's ¶."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).replace("¶", "").split())


def _has_maths(text: str, page: Path) -> bool:
    if 'class="arithmatex"' in text:
        return True
    if page.parent.parent.name == "notebooks" or "jp-RenderedMarkdown" in text:
        cells = re.findall(r'class="[^"]*jp-RenderedMarkdown[^"]*"[^>]*>(.*?)</div>', text, re.S)
        return any(re.search(r"\$\$|\$[^$\s][^$]*\$", cell) for cell in cells)
    return False


def _loads_mathjax(parsed: _Page, page: Path, site: Path) -> list[str]:
    problems = []
    for wanted in (MATHJAX_CONFIG, MATHJAX):
        found = [s for s in parsed.scripts if s.split("?")[0].endswith(wanted)]
        if not found:
            problems.append(f"does not load {wanted}")
        elif not (page.parent / found[0].split("?")[0]).resolve().is_file():
            problems.append(f"loads {found[0]}, which is not in the site")
    if "text/x-mathjax-config" in parsed.script_types:
        problems.append("still carries nbconvert's MathJax 2 configuration")
    return problems


def check(site: Path) -> list[str]:
    problems: list[str] = []
    pages = sorted(site.rglob("*.html"))
    if not pages:
        return [f"{site}: no HTML pages (was the site built?)"]
    if not (site / MATHJAX).is_file():
        problems.append(f"{site / MATHJAX}: MathJax is not shipped with the site")
    fonts = list((site / "javascripts/mathjax/output/chtml/fonts/woff-v2").glob("*.woff"))
    if not fonts:
        problems.append("MathJax's CHTML fonts are not shipped with the site")
    maths_pages = 0
    code_headings: dict[str, dict[str, str]] = {}  # page url -> {id: heading text}
    for page in pages:
        name = page.relative_to(site).as_posix()
        text = page.read_text(encoding="utf-8")
        parsed = _Page()
        parsed.feed(text)
        problems += [f"{name}: loads from the network: {item}" for item in parsed.fetched]
        for match in LOCAL_PATH.finditer(text):
            context = text[max(0, match.start() - 60) : match.end() + 40].replace("\n", " ")
            problems.append(f"{name}: a local path: ...{context}...")
        if _has_maths(text, page):
            maths_pages += 1
            problems += [f"{name}: has maths but {p}" for p in _loads_mathjax(parsed, page, site)]
        for link in parsed.toc:
            if link[1:] not in parsed.headings:
                problems.append(f"{name}: the table of contents links to {link}, no heading")
        for anchor, inner in parsed.headings.items():
            if "<code" not in inner or anchor in parsed.api_headings | parsed.titles:
                continue
            url = name.removesuffix("index.html")
            code_headings.setdefault(url, {})[anchor] = _text(inner)
            toc = parsed.toc.get("#" + anchor)
            if toc is None or "<code" not in toc:
                problems.append(
                    f"{name}: heading #{anchor} ({_text(inner)!r}) lost its code in the table "
                    f"of contents: {'missing' if toc is None else repr(_text(toc))}"
                )
    notebook_maths = [
        p
        for p in pages
        if p.parent.parent.name == "notebooks" and _has_maths(p.read_text(encoding="utf-8"), p)
    ]
    config = site / MATHJAX_CONFIG
    if notebook_maths and (
        not config.is_file() or "jp-RenderedMarkdown" not in config.read_text(encoding="utf-8")
    ):
        problems.append(
            f"{MATHJAX_CONFIG} does not typeset the notebooks' Markdown cells "
            f"(.jp-RenderedMarkdown), which have maths on {len(notebook_maths)} page(s)"
        )
    if maths_pages == 0:
        problems.append("no page has maths: is arithmatex (or the notebooks' maths) gone?")
    for css in site.rglob("*.css"):
        for match in CSS_NETWORK.finditer(css.read_text(encoding="utf-8", errors="replace")):
            problems.append(f"{css.relative_to(site)}: loads from the network: {match.group()}")
    for extra in [*site.rglob("*.ipynb"), *site.rglob("search_index.json")]:
        for match in LOCAL_PATH.finditer(extra.read_text(encoding="utf-8", errors="replace")):
            problems.append(f"{extra.relative_to(site)}: a local path at offset {match.start()}")
    problems += _check_search(site, code_headings)
    return problems


def _check_search(site: Path, code_headings: dict[str, dict[str, str]]) -> list[str]:
    index = site / "search" / "search_index.json"
    if not index.is_file():
        return [f"{index}: no search index"]
    titles = {doc["location"]: doc["title"] for doc in json.loads(index.read_text())["docs"]}
    problems = []
    for url, headings in code_headings.items():
        for anchor, heading in headings.items():
            title = titles.get(f"{url}#{anchor}")
            if title is not None and _text(title) != heading:
                problems.append(
                    f"{url}#{anchor}: the search index titles the section {_text(title)!r}, "
                    f"the heading reads {heading!r}"
                )
    return problems


def main(argv: list[str]) -> int:
    site = Path(argv[0] if argv else "site")
    problems = check(site)
    for problem in problems:
        print(problem, file=sys.stderr)
    pages = len(list(site.rglob("*.html")))
    if problems:
        print(f"{site}: {len(problems)} problem(s) in {pages} pages", file=sys.stderr)
        return 1
    print(f"{site}: {pages} pages checked: offline, MathJax, no local paths, code in headings")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
