/* The widget site page: Copy buttons for the embed snippet and the
 * identity secret, a confirmation before rotating the secret, and the
 * business hours editor's helpers (a second span for a day, "Closed",
 * Monday's hours for the other weekdays).
 *
 * Without JavaScript every span input shows and the form works the same.
 */
(function () {
  "use strict";

  // --- copy buttons ----------------------------------------------------------

  async function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(text);
      return;
    }
    // Plain http (a development server): the old way still works there.
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.append(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    if (!ok) throw new Error("copy refused");
  }

  document.querySelectorAll("[data-copy]").forEach((button) => {
    const source = document.querySelector(button.dataset.copy);
    if (!source) return;
    button.hidden = false;
    button.addEventListener("click", async () => {
      const label = button.textContent;
      try {
        await copyText(source.textContent);
        button.textContent = gettext("Copied");
      } catch (err) {
        button.textContent = gettext("Select and copy");
      }
      setTimeout(() => { button.textContent = label; }, 1500);
    });
  });

  // --- confirmations -----------------------------------------------------------

  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });

  // --- business hours ------------------------------------------------------------

  const hours = document.querySelector("[data-hours]");
  if (!hours) return;
  const rows = [...hours.querySelectorAll("tr[data-day]")];
  const inputsOf = (span) => [...span.querySelectorAll('input[type="time"]')];
  const editable = rows.length && !inputsOf(rows[0].querySelector("[data-span]"))[0].disabled;

  function update(row) {
    const spans = [...row.querySelectorAll("[data-span]")];
    const filled = spans.filter((span) => inputsOf(span).some((input) => input.value));
    row.classList.toggle("closed", filled.length === 0);
    const add = row.querySelector("[data-add-span]");
    const clear = row.querySelector("[data-clear-day]");
    if (add) add.hidden = !spans.some((span) => span.hidden);
    if (clear) clear.hidden = filled.length === 0;
  }

  rows.forEach((row) => {
    const spans = [...row.querySelectorAll("[data-span]")];
    // Spare spans stay out of sight until asked for.
    spans.forEach((span) => { if (span.hasAttribute("data-spare")) span.hidden = true; });
    row.addEventListener("input", () => update(row));
    const add = row.querySelector("[data-add-span]");
    if (add) {
      add.addEventListener("click", () => {
        const spare = spans.find((span) => span.hidden);
        if (!spare) return;
        spare.hidden = false;
        inputsOf(spare)[0].focus();
        update(row);
      });
    }
    const clear = row.querySelector("[data-clear-day]");
    if (clear) {
      clear.addEventListener("click", () => {
        spans.forEach((span, index) => {
          inputsOf(span).forEach((input) => { input.value = ""; });
          if (index > 0) span.hidden = true;
        });
        update(row);
      });
    }
    update(row);
  });

  const copyMonday = hours.querySelector("[data-copy-monday]");
  if (copyMonday && editable) {
    copyMonday.hidden = false;
    copyMonday.addEventListener("click", () => {
      const monday = rows.find((row) => row.dataset.day === "mon");
      const source = [...monday.querySelectorAll("[data-span]")].map((span) =>
        inputsOf(span).map((input) => input.value),
      );
      rows
        .filter((row) => ["tue", "wed", "thu", "fri"].includes(row.dataset.day))
        .forEach((row) => {
          [...row.querySelectorAll("[data-span]")].forEach((span, index) => {
            const values = source[index] || ["", ""];
            inputsOf(span).forEach((input, i) => { input.value = values[i]; });
            span.hidden = index > 0 && !values.some(Boolean);
          });
          update(row);
        });
    });
  }
})();
