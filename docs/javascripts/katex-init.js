// Render the math that pymdownx.arithmatex (generic mode) leaves in .arithmatex elements:
// block math as "\[ ... \]" in a div, inline math as "\( ... \)" in a span.
(function () {
  function render(root) {
    root.querySelectorAll(".arithmatex").forEach(function (el) {
      if (el.dataset.katexDone) return;
      var tex = el.textContent.trim();
      var display = el.tagName === "DIV";
      tex = tex.replace(/^\\\[|\\\]$/g, "").replace(/^\\\(|\\\)$/g, "");
      try {
        katex.render(tex, el, { displayMode: display, throwOnError: false });
        el.dataset.katexDone = "1";
      } catch (err) {
        console.error("katex", err, tex);
      }
    });
  }
  if (typeof document$ !== "undefined") {
    document$.subscribe(function () { render(document); });  // Material's instant navigation
  } else {
    document.addEventListener("DOMContentLoaded", function () { render(document); });
  }
})();
