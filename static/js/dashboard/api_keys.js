/* A key's page in the dashboard's API area: the chart of tokens per day
 * (from #key-usage-chart: {days: ["YYYY-MM-DD", ...], tokens_in: [...],
 * tokens_out: [...]}) and a confirmation before a form marked
 * data-confirm (revoking) is sent.
 */
(function () {
  "use strict";

  // Days arrive as "YYYY-MM-DD" in the site's time zone: show them in UTC
  // so the browser's own zone cannot shift them.
  function dayLabel(iso) {
    const [y, m, d] = iso.split("-").map(Number);
    return new Date(Date.UTC(y, m - 1, d)).toLocaleDateString(document.documentElement.lang || undefined, {
      month: "short", day: "numeric", timeZone: "UTC",
    });
  }

  function drawChart() {
    const source = document.getElementById("key-usage-chart");
    const target = document.getElementById("chart-key-tokens");
    if (!source || !target || !window.Charts) return;
    const data = JSON.parse(source.textContent);
    Charts.bar(target, {
      labels: data.days.map(dayLabel),
      series: [
        { name: gettext("tokens in"), values: data.tokens_in },
        { name: gettext("tokens out"), values: data.tokens_out },
      ],
      stacked: true,
      yLabel: gettext("tokens"),
    });
  }

  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
  drawChart();
})();
