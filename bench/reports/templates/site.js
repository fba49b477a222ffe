// Sortable, filterable tables for the authbench site (no dependencies, no network).
// Click a column header to sort (again to reverse); numbers sort numerically, empty cells last.
// The filter box keeps rows whose text contains every word typed (case-insensitive).
(function () {
  "use strict";
  function cellKey(row, col) {
    var cell = row.cells[col];
    return cell ? cell.getAttribute("data-v") || "" : "";
  }
  function isNumber(text) {
    return text !== "" && !isNaN(Number(text));
  }
  function sortTable(table, col, th) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var numeric = rows.every(function (r) { var k = cellKey(r, col); return k === "" || isNumber(k); });
    var ascending = th.getAttribute("aria-sort") !== "ascending";
    rows.sort(function (a, b) {
      var x = cellKey(a, col), y = cellKey(b, col);
      if (x === "" || y === "") { return (x === "") - (y === ""); }  // missing values last either way
      var d = numeric ? Number(x) - Number(y) : x.localeCompare(y, undefined, {numeric: true});
      return ascending ? d : -d;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (c) { c.setAttribute("aria-sort", "none"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  }
  function filterTable(table, text) {
    var words = text.toLowerCase().split(/\s+/).filter(Boolean);
    var shown = 0, rows = table.tBodies[0].rows;
    Array.prototype.forEach.call(rows, function (r) {
      var hay = Array.prototype.filter.call(r.cells, function (c) { return !c.classList.contains("prov"); })
        .map(function (c) { return c.textContent; }).join(" ").toLowerCase();
      var keep = words.every(function (w) { return hay.indexOf(w) !== -1; });
      r.classList.toggle("hidden", !keep);
      if (keep) { shown += 1; }
    });
    var label = document.getElementById("shown-" + table.id);
    if (label) { label.textContent = shown + " of " + rows.length + " rows"; }
  }
  document.querySelectorAll("table.sortable").forEach(function (table) {
    table.querySelectorAll("thead th button[data-col]").forEach(function (button) {
      button.addEventListener("click", function () {
        sortTable(table, Number(button.getAttribute("data-col")), button.parentNode);
      });
    });
  });
  document.querySelectorAll("input.filter").forEach(function (input) {
    var table = document.getElementById(input.getAttribute("data-table"));
    input.addEventListener("input", function () { filterTable(table, input.value); });
  });
}());
