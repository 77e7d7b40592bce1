// Conversation list: "select all" for the rows on the page and a count of
// the conversations selected for the dataset form.
(function () {
  "use strict";
  const all = document.querySelector("[data-select-all]");
  const boxes = Array.from(document.querySelectorAll('input[name="conversations"][form="dataset-form"]'));
  const count = document.querySelector("[data-selected-count]");

  function update() {
    const selected = boxes.filter((box) => box.checked).length;
    if (count) {
      count.textContent = selected
        ? interpolate(gettext("%(count)s selected."), { count: selected }, true)
        : gettext("Select conversations in the table.");
    }
    if (all) {
      all.checked = selected > 0 && selected === boxes.length;
      all.indeterminate = selected > 0 && selected < boxes.length;
    }
  }

  if (all) {
    all.addEventListener("change", () => {
      boxes.forEach((box) => { box.checked = all.checked; });
      update();
    });
  }
  boxes.forEach((box) => box.addEventListener("change", update));
  update();
})();
