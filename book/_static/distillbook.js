// Distillation, Reproduced: the claims tables of chapter pages (claims.markdown_table, whose last header reads
// "verdict") become one card per claim with the verdict first, as a coloured badge (styled by distillbook.css),
// so that a phone shows every verdict without scrolling sideways.
(function () {
  "use strict";
  var VERDICTS = ["not reproduced", "reproduced", "inconclusive"];

  function badge(cell) {
    if (cell.querySelector(".verdict")) return;
    var marks = cell.querySelectorAll("strong, em");
    for (var i = 0; i < marks.length; i++) {
      var text = marks[i].textContent.trim();
      if (VERDICTS.indexOf(text) >= 0) {
        var span = document.createElement("span");
        span.className = "verdict verdict-" + text.replace(/ /g, "-");
        span.textContent = text;
        marks[i].replaceWith(span);
        return;
      }
    }
  }

  function enhance() {
    var tables = document.querySelectorAll("table");
    for (var t = 0; t < tables.length; t++) {
      var table = tables[t];
      if (table.closest(".scoreboard-table, .verdict-summary")) continue;
      var heads = Array.prototype.map.call(table.querySelectorAll("thead th"), function (th) {
        return th.textContent.trim();
      });
      var col = heads.map(function (h) { return h.toLowerCase(); }).indexOf("verdict");
      if (col < 0) continue;
      table.classList.add("claims-table");
      var rows = table.querySelectorAll("tbody tr");
      for (var r = 0; r < rows.length; r++) {
        var cells = rows[r].children;
        for (var c = 0; c < cells.length; c++) {
          if (heads[c]) cells[c].setAttribute("data-label", heads[c]);
          if (c === col) {
            cells[c].classList.add("verdict-cell");
            badge(cells[c]);
          }
        }
      }
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", enhance);
  else enhance();
})();
