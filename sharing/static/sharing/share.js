/* Share links: the copy buttons (a link's address; a code block on the shared page).
 * Everything else is plain forms. No inline script anywhere (CSP script-src 'self'); strings
 * come translated in data-* attributes. */
(function () {
  "use strict";

  // Copy buttons are shown only where this script runs (see .copy-key in app.css).
  document.documentElement.classList.add("js");

  function copied(btn) {
    const old = btn.textContent;
    btn.textContent = btn.dataset.copied || old;
    setTimeout(() => { btn.textContent = old; }, 1500);
  }

  function copy(text, btn) {
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(() => copied(btn), () => {});
    } else if (document.execCommand && document.execCommand("copy")) {
      copied(btn);
    }
  }

  document.addEventListener("click", (e) => {
    const btn = e.target.closest("button");
    if (!btn) return;
    if (btn.matches("[data-copy-share]")) {
      const input = document.getElementById(btn.dataset.copyShare);
      if (!input) return;
      input.select(); // without clipboard access (plain http), the link is selected to copy
      copy(input.value, btn);
    } else if (btn.matches("[data-copy]")) {
      const pre = btn.closest(".code-block") && btn.closest(".code-block").querySelector("pre");
      if (pre) copy(pre.textContent, btn);
    }
  });
})();
