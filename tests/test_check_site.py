"""scripts/check_site.py, which `make docs` runs on the built site, on small hand-made sites.

Each test starts from a site that passes and puts back one of the problems the check exists
for: a CDN script, a font from the network, maths without MathJax, nbconvert's MathJax 2, a
builder's path, a table of contents that drops a heading's code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import ROOT, skip_without_source_tree

skip_without_source_tree("scripts/check_site.py")
sys.path.insert(0, str(ROOT / "scripts"))
import check_site  # noqa: E402

PAGE = """<!doctype html><html><head>
<link rel="stylesheet" href="../assets/stylesheets/main.css">
<script src="../javascripts/mathjax.js"></script>
<script src="../javascripts/mathjax/tex-mml-chtml.js"></script>
</head><body>
<nav><a href="#jit-and-vmap" class="md-nav__link"><span>{toc}</span></a></nav>
<h1 id="guide">Guide</h1>
<p><span class="arithmatex">\\(y = x\\)</span></p>
<h2 id="jit-and-vmap"><code>jit</code> and <code>vmap</code>
<a class="headerlink" href="#jit-and-vmap">¶</a></h2>
{extra}
</body></html>
"""
CODE_TOC = "<code>jit</code> and <code>vmap</code>"


def _site(tmp_path: Path, toc: str = CODE_TOC, extra: str = "", search_title: str = "") -> Path:
    site = tmp_path / "site"
    (site / "guide").mkdir(parents=True)
    (site / "guide" / "index.html").write_text(PAGE.format(toc=toc, extra=extra))
    mathjax = site / "javascripts" / "mathjax"
    (mathjax / "output/chtml/fonts/woff-v2").mkdir(parents=True)
    (mathjax / "output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff").write_bytes(b"wOFF")
    (mathjax / "tex-mml-chtml.js").write_text("/* MathJax */")
    (site / "javascripts" / "mathjax.js").write_text('const MATHS = ".jp-RenderedMarkdown";')
    (site / "assets" / "stylesheets").mkdir(parents=True)
    (site / "assets" / "stylesheets" / "main.css").write_text("body{font-family:sans-serif}")
    title = search_title or CODE_TOC
    docs = [{"location": "guide/#jit-and-vmap", "title": title, "text": ""}]
    (site / "search").mkdir()
    (site / "search" / "search_index.json").write_text(json.dumps({"docs": docs}))
    return site


def test_a_good_site_passes(tmp_path):
    assert check_site.check(_site(tmp_path)) == []


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            '<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-mml-chtml.js"></script>',
            "cdn",
        ),
        ('<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">', "fonts"),
        ('<img src="https://colab.research.google.com/assets/colab-badge.svg">', "colab"),
        ('<script src=""> </script>', "empty URL"),
        ('<div style="background: url(//example.org/x.png)"></div>', "example.org"),
        ("<pre>lucid_jax 0.1.0 from /work/main/lucid_jax/__init__.py</pre>", "local path"),
        ('<script type="text/x-mathjax-config">MathJax.Hub.Config({})</script>', "MathJax 2"),
    ],
)
def test_each_problem_is_reported(tmp_path, extra, expected):
    problems = check_site.check(_site(tmp_path, extra=extra))
    assert len(problems) == 1, problems
    assert expected.lower() in problems[0].lower(), problems


def test_a_heading_that_loses_its_code_in_the_contents_is_reported(tmp_path):
    problems = check_site.check(_site(tmp_path, toc="jit and vmap"))
    assert problems and "lost its code" in problems[0], problems


def test_a_contents_link_to_no_heading_is_reported(tmp_path):
    site = _site(tmp_path)
    page = site / "guide" / "index.html"
    page.write_text(page.read_text().replace('href="#jit-and-vmap" class', 'href="#4" class'))
    problems = check_site.check(site)
    assert any("links to #4" in p for p in problems), problems


def test_a_search_title_without_the_code_is_reported(tmp_path):
    problems = check_site.check(_site(tmp_path, search_title=" and "))
    assert problems and "search index" in problems[0], problems


def test_maths_without_mathjax_is_reported(tmp_path):
    site = _site(tmp_path)
    (site / "javascripts" / "mathjax" / "tex-mml-chtml.js").unlink()
    problems = check_site.check(site)
    assert any("MathJax is not shipped" in p for p in problems), problems
    assert any("has maths but loads" in p for p in problems), problems
