/* The model-versions pages: choosing 2 to 4 versions to compare,
 * confirming actions that change production, and re-reading the page's
 * live regions ([data-live]) when versions change on topic "versions".
 */
(function () {
  "use strict";

  const MIN = 2;
  const MAX = 4;

  // --- compare selection ---------------------------------------------------

  const compareForm = document.getElementById("compare-form");

  function compareUpdate() {
    if (!compareForm) return;
    const button = compareForm.querySelector("[data-compare-button]");
    const hint = compareForm.querySelector("[data-compare-hint]");
    const count = compareForm.querySelectorAll('input[name="v"]:checked').length;
    button.disabled = count < MIN || count > MAX;
    hint.classList.toggle("warn", count > MAX);
    const figures = { count, min: MIN, max: MAX };
    let text = gettext("%(count)s selected.");
    if (count === 0) text = gettext("Select %(min)s to %(max)s versions to compare them side by side.");
    else if (count < MIN) text = gettext("%(count)s selected: select at least %(min)s.");
    else if (count > MAX) text = gettext("%(count)s selected: compare at most %(max)s.");
    hint.textContent = interpolate(text, figures, true);
  }

  if (compareForm) {
    compareForm.addEventListener("change", compareUpdate);
    compareForm.addEventListener("submit", (event) => {
      compareUpdate();
      if (compareForm.querySelector("[data-compare-button]").disabled) event.preventDefault();
    });
    compareUpdate();
  }

  // --- confirmations -------------------------------------------------------

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.dataset.confirm) return;
    if (!window.confirm(form.dataset.confirm)) event.preventDefault();
  });

  // --- live regions --------------------------------------------------------

  let timer = null;

  async function refresh() {
    const regions = document.querySelectorAll("[data-live]");
    if (!regions.length) return;
    let doc;
    try {
      const response = await fetch(location.href, {
        credentials: "same-origin",
        headers: { Accept: "text/html" },
      });
      if (!response.ok || response.redirected) return;
      doc = new DOMParser().parseFromString(await response.text(), "text/html");
    } catch (err) {
      console.error(err);
      return;
    }
    const checked = new Set(
      [...document.querySelectorAll('input[name="v"]:checked')].map((input) => input.value),
    );
    regions.forEach((region) => {
      const fresh = doc.querySelector(`[data-live="${CSS.escape(region.dataset.live)}"]`);
      if (fresh) region.replaceWith(document.importNode(fresh, true));
    });
    document.querySelectorAll('input[name="v"]').forEach((input) => {
      input.checked = checked.has(input.value);
    });
    compareUpdate();
  }

  function refreshSoon() {
    clearTimeout(timer);
    timer = setTimeout(refresh, 300);
  }

  if (window.DashboardSocket) {
    window.DashboardSocket.on("versions", refreshSoon);
    window.DashboardSocket.on("reconnected", refreshSoon);
  }
})();
