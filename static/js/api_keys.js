/* The account page for API keys: Copy buttons (data-copy="<element id>")
 * for the new key and the usage snippets, a confirmation before a form
 * marked data-confirm (revoking) is sent, and a page that shows a new key
 * turned into a plain GET entry, so reloading it lists the keys instead
 * of creating another one.
 */
(function () {
  "use strict";

  function select(node) {
    const range = document.createRange();
    range.selectNodeContents(node);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  function report(button, text) {
    const box = button.closest("[data-secret]");
    const status = box && box.querySelector("[data-copy-status]");
    if (status) {
      status.textContent = text;
      return;
    }
    const label = button.textContent;
    button.textContent = text;
    window.setTimeout(() => { button.textContent = label; }, 2000);
  }

  async function copy(button, node) {
    const text = node.textContent;
    try {
      if (!navigator.clipboard || !window.isSecureContext) throw new Error("no clipboard");
      await navigator.clipboard.writeText(text);
      report(button, gettext("Copied."));
    } catch (_error) {
      // Without the clipboard API (plain http, old browsers) select the
      // text, so one keystroke copies it.
      select(node);
      report(button, gettext("Selected: press Ctrl+C (⌘C on a Mac) to copy."));
    }
  }

  document.querySelectorAll("[data-copy]").forEach((button) => {
    const node = document.getElementById(button.dataset.copy);
    if (!node) return;
    button.hidden = false;
    button.addEventListener("click", () => copy(button, node));
  });

  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });

  if (document.querySelector("[data-secret]") && window.history.replaceState) {
    window.history.replaceState(null, "", window.location.href);
  }
})();
