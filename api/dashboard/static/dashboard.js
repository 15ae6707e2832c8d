// imagegate usage dashboard: small enhancements to a page that works without them. It reads the
// page only; it stores nothing, fetches nothing and never sees a key (the session cookie is
// HttpOnly).
"use strict";

function showReadout(bar) {
  const figure = bar.closest("figure");
  const out = figure && figure.querySelector(".readout");
  if (!out) return;
  const parts = Array.from(bar.querySelectorAll("rect.seg"), seg => seg.dataset.value);
  const detail = parts.length > 1 ? " (" + parts.join(" + ") + ")" : "";
  out.textContent = bar.dataset.label + ": " + bar.dataset.total + detail;
}

function localTimes() {
  for (const node of document.querySelectorAll("time[datetime]")) {
    const when = new Date(node.getAttribute("datetime"));
    if (!Number.isNaN(when.getTime())) {
      node.title = node.getAttribute("datetime") + " UTC";
      node.textContent = when.toLocaleString();
    }
  }
}

function cellValue(row, index) {
  const text = (row.cells[index] ? row.cells[index].textContent : "").trim();
  const number = Number(text.replace(/[$%,]/g, "").split("/")[0]);
  return text !== "" && !Number.isNaN(number) ? number : text.toLowerCase();
}

function sortable(table) {
  const headers = Array.from(table.tHead.rows[0].cells);
  headers.forEach((th, index) => {
    th.addEventListener("click", () => {
      const descending = th.getAttribute("aria-sort") !== "descending";
      headers.forEach(h => h.removeAttribute("aria-sort"));
      th.setAttribute("aria-sort", descending ? "descending" : "ascending");
      const body = table.tBodies[0];
      const rows = Array.from(body.rows);
      rows.sort((a, b) => {
        const x = cellValue(a, index), y = cellValue(b, index);
        const order = x < y ? -1 : x > y ? 1 : 0;
        return descending ? -order : order;
      });
      rows.forEach(row => body.appendChild(row));
    });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  for (const bar of document.querySelectorAll("figure.chart g.bar")) {
    bar.addEventListener("mouseenter", () => showReadout(bar));
    bar.addEventListener("focus", () => showReadout(bar));
  }
  for (const table of document.querySelectorAll("table.sortable")) sortable(table);
  localTimes();
});
