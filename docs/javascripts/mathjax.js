// MathJax configuration, loaded before the MathJax shipped with the site
// (javascripts/mathjax/, put there by scripts/vendor_mathjax.py: nothing comes from a CDN).
// Typeset: pymdownx.arithmatex's output on the Markdown pages (generic mode: \( \) and \[ \]
// in .arithmatex elements) and the notebooks' Markdown cells ($ and $$, as Jupyter writes
// them, in .jp-RenderedMarkdown); nothing else, so a "$" in code or prose stays text.
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {ignoreHtmlClass: ".*|", processHtmlClass: "arithmatex|jp-RenderedMarkdown"},
};
// mkdocs-material's instant navigation swaps pages without reloading: typeset each new page.
document$.subscribe(() => {
  if (!window.MathJax.startup || !window.MathJax.startup.output) return;  // not loaded yet
  MathJax.startup.output.clearCache();
  MathJax.typesetClear();
  MathJax.texReset();
  MathJax.typesetPromise();
});
