// Keyboard-first navigation shared by every page. Elements declare their key with data-hotkey;
// lists marked data-keyboard-list (and rubric tables) move the focus with j / k.
(function () {
  "use strict";

  function typing(event) {
    var t = event.target;
    return t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName));
  }

  function focusables() {
    var list = document.querySelector("[data-keyboard-list]");
    if (list) return Array.prototype.slice.call(list.querySelectorAll("a"));
    return Array.prototype.slice.call(document.querySelectorAll("table.rubric tbody tr"));
  }

  function move(step) {
    var items = focusables();
    if (!items.length) return;
    var i = items.indexOf(document.activeElement);
    var next = items[Math.min(items.length - 1, Math.max(0, i + step))];
    next.focus();
    next.scrollIntoView({block: "nearest"});
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === "Escape" && typing(event)) { event.target.blur(); return; }
    if (typing(event)) return;
    if (event.key === "j") { move(1); event.preventDefault(); return; }
    if (event.key === "k") { move(-1); event.preventDefault(); return; }
    var target = document.querySelector('[data-hotkey="' + CSS.escape(event.key) + '"]');
    if (!target) return;
    event.preventDefault();
    if (target.tagName === "INPUT" || target.tagName === "SELECT") { target.focus(); return; }
    // htmx binds the content it swaps in only when it settles (about 20 ms later); a key pressed before that would
    // make a link do a full page load. process() binds it now, and does nothing to an element already bound.
    if (window.htmx) window.htmx.process(target);
    target.click();
  });
})();
