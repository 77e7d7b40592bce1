// Polls /readyz and shows each check on the status page.
(function () {
  "use strict";
  const list = document.getElementById("checks");
  if (!list) return;
  const voice = document.getElementById("voice-checks");

  function describe(name, check) {
    if (!check) return "";
    if (!check.ok) return check.error || gettext("failing");
    if (name === "database") return check.vendor || "";
    if (name === "speech_recognition") return [check.backend, check.model].filter(Boolean).join(" · ");
    if (name === "speech_synthesis") return check.engine || "";
    if (name === "inference") {
      const ready = (check.workers || []).filter((w) => w.state === "ready");
      const first = ready[0];
      return first
        ? interpolate(
            gettext("%(count)s ready · %(model)s on %(device)s"),
            { count: ready.length, model: first.model_version || "", device: first.device || "" },
            true
          )
        : "";
    }
    return "";
  }

  async function refresh() {
    let body = null;
    try {
      const response = await fetch("/readyz", { headers: { Accept: "application/json" } });
      body = await response.json();
    } catch (error) {
      body = null;
    }
    const items = [...list.querySelectorAll("[data-check]")];
    if (voice) items.push(...voice.querySelectorAll("[data-check]"));
    for (const item of items) {
      const name = item.dataset.check;
      const check = body && body.checks ? body.checks[name] : null;
      item.classList.toggle("ok", Boolean(check && check.ok));
      item.classList.toggle("fail", !(check && check.ok));
      item.querySelector(".detail").textContent = check ? describe(name, check) : "web server unreachable";
    }
  }

  refresh();
  setInterval(refresh, 3000);
})();
