/* The API keys page: the copy button for a new key. Everything else works without script
 * (htmx only makes create, revoke and the store switch swap in place). No inline script
 * anywhere (CSP script-src 'self'); strings come translated in data-* attributes. */
(function () {
  "use strict";

  // Copy buttons are shown only where this script runs (see .copy-key in app.css).
  document.documentElement.classList.add("js");

  function selectText(el) {
    const range = document.createRange();
    range.selectNodeContents(el);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  function copied(btn) {
    const old = btn.textContent;
    btn.textContent = btn.dataset.copied || old;
    setTimeout(() => { btn.textContent = old; }, 1500);
  }

  // Delegated: the new key arrives in an htmx swap.
  document.addEventListener("click", (e) => {
    const btn = e.target.closest("button[data-copy-key]");
    if (!btn) return;
    const source = document.getElementById(btn.dataset.copyKey);
    if (!source) return;
    const text = source.textContent.trim();
    selectText(source); // without clipboard access (plain http), the key is selected to copy
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(() => copied(btn), () => {});
    } else if (document.execCommand && document.execCommand("copy")) {
      copied(btn);
    }
  });
})();
