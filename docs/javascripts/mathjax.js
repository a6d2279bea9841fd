// MathJax configuration, loaded before the MathJax shipped with the site
// (javascripts/mathjax/, put there by scripts/vendor_mathjax.py: nothing comes from a CDN).
// What is typeset: pymdownx.arithmatex's output on the Markdown pages (generic mode: \( \) and
// \[ \] in .arithmatex elements) and the notebooks' Markdown cells ($ and $$, as Jupyter
// writes them, in .jp-RenderedMarkdown); nothing else, so a "$" elsewhere stays text.
const MATHS = ".arithmatex, .jp-RenderedMarkdown";

function typesetMaths() {
  MathJax.startup.output.clearCache();
  MathJax.typesetClear();
  MathJax.texReset();
  return MathJax.typesetPromise(Array.from(document.querySelectorAll(MATHS)));
}

window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true,
  },
  startup: {
    typeset: false,  // not the whole page: typesetMaths picks the elements
    pageReady: () => MathJax.startup.defaultPageReady().then(typesetMaths),
  },
};

// mkdocs-material's instant navigation swaps pages without reloading: typeset each new page
// (the first one is typeset by pageReady, once MathJax has loaded).
document$.subscribe(() => {
  if (window.MathJax && MathJax.startup && MathJax.startup.output) typesetMaths();
});
