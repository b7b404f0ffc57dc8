// The review gallery: draws the objects from the JSON embedded in this page, filters, sorts and searches them,
// and lets a person edit alt text and download the edits as a review file (JSONL) for `sightline review apply`.
// Plain JavaScript, no framework, nothing fetched. Every value from a record reaches the page as text
// (textContent, attribute values): never as HTML.
(function () {
  "use strict";

  var DATA = JSON.parse(document.getElementById("gallery-data").textContent);
  var ITEMS = DATA.items || [];
  var META = DATA.meta || {};
  var STORAGE_KEY = "sightline-review:" + (META.source || "") + ":edits";
  var STATUS_ORDER = { failed: 0, partial: 1, processing: 2, deferred: 3, skipped: 4, succeeded: 5 };
  var FLAG_LABELS = META.flag_labels || {};
  var FLAG_SEVERITY = META.flag_severity || {};
  var LANGUAGE_TAG = /^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$/;

  var state = { visible: [], current: null, edits: loadEdits() };
  var cards = []; // one per item, in ITEMS order: { item, li, article, textarea, ... }

  var $ = function (id) { return document.getElementById(id); };
  var search = $("search");
  var statusFilter = $("filter-status");
  var profileFilter = $("filter-profile");
  var flagFilter = $("filter-flag");
  var sortSelect = $("sort");
  var orderSelect = $("order");
  var list = $("cards");

  // --- Small helpers: elements are built from text only.

  function el(tag, attributes) {
    var node = document.createElement(tag);
    if (attributes) {
      Object.keys(attributes).forEach(function (name) {
        var value = attributes[name];
        if (value === null || value === undefined || value === false) return;
        if (name === "text") node.textContent = String(value);
        else if (name === "className") node.className = value;
        else node.setAttribute(name, value === true ? "" : String(value));
      });
    }
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined || child === false) continue;
      node.appendChild(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function chars(text) { return Array.from(text || "").length; } // code points, as the pipeline counts them

  function number(value) { return typeof value === "number" && isFinite(value) ? value : null; }

  function formatCount(value) { return Number(value || 0).toLocaleString("en"); }

  function formatBytes(size) {
    size = number(size);
    if (size === null) return null;
    if (size < 1024) return size + " B";
    if (size < 1024 * 1024) return (size / 1024).toFixed(1) + " KB";
    return (size / 1024 / 1024).toFixed(1) + " MB";
  }

  function formatCost(item) {
    var cost = number(item.cost);
    if (cost === null) return item.cache_hit ? "none (cache hit)" : "not priced";
    var digits = cost !== 0 && cost < 0.01 ? 6 : 4;
    return cost.toFixed(digits) + " " + (item.currency || META.currency || "");
  }

  function flagLabel(code) {
    return FLAG_LABELS[code] || String(code).replace(/[_-]+/g, " ");
  }

  function languageAttribute(language) {
    return typeof language === "string" && LANGUAGE_TAG.test(language) ? language : null;
  }

  function effectiveAlt(item) {
    if (typeof item.effective_alt_text === "string") return item.effective_alt_text;
    if (typeof item.alt_text_reviewed === "string") return item.alt_text_reviewed;
    return item.alt_text || "";
  }

  function decorative(item) {
    return typeof item.effective_decorative === "boolean" ? item.effective_decorative : Boolean(item.decorative);
  }

  // Why an item without alt text is as it should be; "" when the alt text is missing.
  function noAltReason(item) {
    if (decorative(item)) return "Empty: the image is decorative";
    if (item.task === "document" || item.is_document) return "None (optional for a document)";
    if (item.status !== "succeeded" && item.status !== "partial") return "None: the object was not described";
    return "";
  }

  function itemId(item) { return [item.bucket, item.key, item.version || ""].join("\u0000"); }

  // --- Edits: kept in this browser (localStorage) so a reload loses nothing; the review file is the result.

  function loadEdits() {
    try {
      var stored = JSON.parse(window.localStorage.getItem(STORAGE_KEY) || "{}");
      return stored && typeof stored === "object" ? stored : {};
    } catch (error) {
      return {};
    }
  }

  function saveEdits() {
    try {
      window.localStorage.setItem(STORAGE_KEY, JSON.stringify(state.edits));
    } catch (error) {
      // storage unavailable (private mode, a browser setting): the edits live as long as the page
    }
  }

  function editedValue(entry) {
    var id = itemId(entry.item);
    var edit = state.edits[id];
    return edit && edit.sha === (entry.item.content_sha256 || null) ? edit.alt_text : null;
  }

  function editedEntries() {
    return cards.filter(function (entry) { return editedValue(entry) !== null; });
  }

  // --- One card per object.

  function thumbnail(item) {
    var thumb = item.thumbnail || {};
    var box = el("div", { className: "thumb" });
    if (thumb.src && /^data:image\/(jpeg|png);base64,/.test(thumb.src)) {
      var alt = effectiveAlt(item);
      var attributes = { src: thumb.src, width: thumb.width, height: thumb.height, alt: alt };
      if (decorative(item)) {
        attributes.alt = "";
        attributes.role = "presentation";
      } else if (!alt) {
        attributes.alt = "No alt text yet: " + item.key;
      }
      box.appendChild(el("img", attributes));
      if (thumb.note) box.appendChild(el("p", { className: "thumb-note", text: thumb.note }));
    } else {
      box.appendChild(
        el("div", { className: "placeholder" }, el("strong", { text: "No preview" }), thumb.note || "")
      );
    }
    return box;
  }

  function badges(item, entry) {
    var ul = el("ul", { className: "badges", "aria-label": "Status and flags" });
    var status = String(item.status || "unknown");
    ul.appendChild(el("li", { className: "badge status-" + status.replace(/[^a-z]/g, ""), text: "Status: " + status }));
    (item.flags || []).forEach(function (flag) {
      var severity = FLAG_SEVERITY[flag.code] || "warn";
      ul.appendChild(
        el("li", {
          className: "badge flag" + (severity === "bad" ? " flag-bad" : severity === "info" ? " flag-info" : ""),
          "data-flag": flag.code,
          text: flag.message ? flagLabel(flag.code) + ": " + flag.message : flagLabel(flag.code),
        })
      );
    });
    entry.editedBadge = el("li", { className: "badge edited", text: "Edited here", hidden: true });
    ul.appendChild(entry.editedBadge);
    return ul;
  }

  function altSection(item, entry, id) {
    var section = el("div", { className: "alt" });
    var limit = number(item.alt_text_max_chars);
    var lang = languageAttribute(item.language);
    section.appendChild(el("h3", { id: id + "-alt-heading", text: "Alt text" }));
    var alt = effectiveAlt(item);
    if (alt) {
      section.appendChild(el("p", { className: "alt-text", lang: lang, text: alt }));
    } else {
      section.appendChild(
        el("p", { className: "alt-text" + (noAltReason(item) ? " none" : " missing"), text: noAltReason(item) || "Missing" })
      );
    }
    var length = chars(alt);
    var over = limit !== null && length > limit;
    section.appendChild(
      el("p", {
        className: "alt-count" + (over ? " over" : ""),
        text: length + (limit !== null ? " of " + limit + " characters" : " characters") +
          (over ? ": " + (length - limit) + " over the limit" : ""),
      })
    );
    if (typeof item.alt_text_reviewed === "string") {
      section.appendChild(
        el("p", { className: "reviewed" },
          "Reviewed" + (item.reviewed_by ? " by " + item.reviewed_by : "") + "; the model wrote: ",
          el("q", { lang: lang, text: item.alt_text || "" }))
      );
    }

    var editorId = id + "-editor";
    var textareaId = id + "-textarea";
    var countId = id + "-count";
    entry.toggle = el("button", {
      type: "button",
      className: "edit-toggle",
      "aria-expanded": "false",
      "aria-controls": editorId,
      "aria-describedby": id + "-key", // which object: every card has this button
      text: "Edit alt text",
    });
    entry.textarea = el("textarea", {
      id: textareaId,
      rows: 3,
      lang: lang,
      spellcheck: "true",
      "aria-describedby": countId,
    });
    var stored = editedValue(entry);
    if (stored !== null && stored.trim() === alt.trim()) {
      delete state.edits[itemId(item)]; // stored since (review applied): nothing left to edit
      saveEdits();
      stored = null;
    }
    entry.textarea.value = stored !== null ? stored : alt;
    entry.count = el("p", { id: countId, className: "edit-count-line" });
    entry.revert = el("button", { type: "button", "aria-describedby": id + "-key", text: "Undo edit" });
    entry.editor = el("div", { id: editorId, className: "editor", hidden: true },
      el("label", { for: textareaId, text: "Reviewed alt text for " + item.key }),
      entry.textarea,
      el("div", { className: "editor-actions" }, entry.count, entry.revert)
    );
    section.appendChild(entry.toggle);
    section.appendChild(entry.editor);

    entry.toggle.addEventListener("click", function () { toggleEditor(entry, entry.editor.hidden); });
    entry.textarea.addEventListener("input", function () { recordEdit(entry); });
    entry.revert.addEventListener("click", function () {
      entry.textarea.value = alt;
      recordEdit(entry);
      entry.textarea.focus();
    });
    entry.original = alt;
    entry.limit = limit;
    return section;
  }

  function pageList(item) {
    var statuses = Array.isArray(item.page_statuses) ? item.page_statuses : [];
    var failed = Array.isArray(item.pages_failed) ? item.pages_failed : [];
    var ul = el("ul", { className: "pages", "aria-label": "Pages" });
    function add(first, last, status) {
      var label = first === last ? "Page " + first : "Pages " + first + "–" + last;
      var kind = status === "succeeded" ? "page-ok" : status === "failed" ? "page-bad" : "page-other";
      ul.appendChild(el("li", { className: kind, text: label + ": " + status }));
    }
    if (statuses.length) {
      var runs = [];
      statuses.forEach(function (status, index) {
        var last = runs[runs.length - 1];
        if (statuses.length > 20 && last && last.status === status) last.last = index + 1;
        else runs.push({ first: index + 1, last: index + 1, status: String(status) });
      });
      runs.slice(0, 40).forEach(function (run) { add(run.first, run.last, run.status); });
      if (runs.length > 40) ul.appendChild(el("li", { className: "page-other", text: "… " + (runs.length - 40) + " more runs" }));
    } else if (failed.length) {
      failed.slice(0, 40).forEach(function (page) { add(page, page, "failed"); });
    }
    return ul.childNodes.length ? ul : null;
  }

  function consoleLink(uri) {
    var match = /^s3:\/\/([^/]+)\/(.+)$/.exec(String(uri || ""));
    if (!match) return null;
    return "https://s3.console.aws.amazon.com/s3/object/" + encodeURIComponent(match[1]) +
      "?prefix=" + encodeURIComponent(match[2]);
  }

  function documentSection(item) {
    if (!item.is_document && !item.pages && !item.result_uri) return null;
    var box = el("div", { className: "document" });
    var pages = number(item.pages);
    var failed = Array.isArray(item.pages_failed) ? item.pages_failed.length : 0;
    box.appendChild(el("h3", { text: "Document" }));
    box.appendChild(
      el("p", {
        className: "description",
        text: (pages !== null ? pages + (pages === 1 ? " page" : " pages") : "Pages unknown") +
          (failed ? ", " + failed + " failed" : ""),
      })
    );
    var pagesList = pageList(item);
    if (pagesList) box.appendChild(pagesList);
    var links = el("ul", { className: "results-links" });
    [["Result (JSON)", item.result_uri], ["Result (Markdown)", item.result_markdown_uri]].forEach(function (pair) {
      if (!pair[1]) return;
      var href = consoleLink(pair[1]);
      links.appendChild(
        el("li", {},
          pair[0] + ": ",
          href ? el("a", { href: href, rel: "noopener noreferrer", target: "_blank", text: pair[1] }) : el("code", { text: pair[1] }))
      );
    });
    if (links.childNodes.length) box.appendChild(links);
    return box;
  }

  function facts(item) {
    var dl = el("dl", { className: "facts" });
    function fact(name, value, className) {
      if (value === null || value === undefined || value === "") return;
      dl.appendChild(el("dt", { text: name }));
      dl.appendChild(el("dd", { className: className, text: String(value) }));
    }
    if (item.error_type || item.error_message) {
      fact("Error", [item.error_type, item.error_message].filter(Boolean).join(": "), "error-reason");
    }
    fact("Profile", item.profile);
    fact("Task", item.task);
    fact("Language", item.language);
    fact("Decorative", decorative(item) ? "yes: alt text empty by design" : "no");
    fact("Cache", item.cache_hit ? "hit: described before, not billed again" : null);
    fact("Model", item.model_id);
    var prompt = number(item.prompt_tokens);
    var completion = number(item.completion_tokens);
    if (prompt !== null || completion !== null) {
      fact("Tokens", formatCount(prompt) + " prompt + " + formatCount(completion) + " completion");
    }
    fact("Cost", formatCost(item));
    fact("Processed", item.processed_at);
    return dl;
  }

  function card(item, index) {
    var id = "item-" + index;
    var entry = { item: item, index: index };
    var body = el("div", { className: "card-body" });
    body.appendChild(el("h2", { className: "key", id: id + "-key", text: item.key }));
    var meta = [item.bucket];
    if (item.version) meta.push("version " + item.version);
    if (item.content_type) meta.push(item.content_type);
    var size = formatBytes(item.size);
    if (size) meta.push(size);
    body.appendChild(el("p", { className: "meta", text: meta.filter(Boolean).join(" · ") }));
    body.appendChild(badges(item, entry));
    body.appendChild(altSection(item, entry, id));
    var lang = languageAttribute(item.language);
    if (item.description) {
      body.appendChild(el("h3", { text: "Description" }));
      body.appendChild(el("p", { className: "description", lang: lang, text: item.description }));
    }
    var documentBox = documentSection(item);
    if (documentBox) body.appendChild(documentBox);
    if (item.text) {
      body.appendChild(
        el("details", { className: "ocr" },
          el("summary", {
            text: "Text in the image (" + formatCount(chars(item.text)) + " characters" +
              (item.text_truncated ? ", cut short" : "") + ")",
          }),
          el("pre", { tabindex: "0", text: item.text })) // focusable: it scrolls, and keys must scroll it too
      );
    }
    if (item.tags && item.tags.length) {
      body.appendChild(el("h3", { text: "Tags" }));
      var tags = el("ul", { className: "tags", "aria-label": "Tags", lang: lang });
      item.tags.forEach(function (tag) { tags.appendChild(el("li", { text: tag })); });
      body.appendChild(tags);
    }
    body.appendChild(facts(item));

    entry.article = el("article", {
      className: "card",
      id: id,
      tabindex: "-1",
      "aria-labelledby": id + "-key",
      "data-key": item.key,
      "data-status": item.status,
    }, thumbnail(item), body);
    entry.li = el("li", { className: "card-item" }, entry.article);
    entry.article.addEventListener("focusin", function () { setCurrent(entry); });
    entry.search = [item.key, effectiveAlt(item), item.alt_text, item.description, item.text]
      .concat(item.tags || [])
      .filter(Boolean)
      .join("\n")
      .toLowerCase();
    updateEditState(entry);
    return entry;
  }

  // --- Editing.

  function toggleEditor(entry, open) {
    entry.editor.hidden = !open;
    entry.toggle.setAttribute("aria-expanded", open ? "true" : "false");
    entry.toggle.textContent = open ? "Close editor" : "Edit alt text";
    if (open) entry.textarea.focus();
  }

  function recordEdit(entry) {
    var value = entry.textarea.value;
    var id = itemId(entry.item);
    if (value.trim() === entry.original.trim()) delete state.edits[id];
    else state.edits[id] = { alt_text: value, sha: entry.item.content_sha256 || null };
    saveEdits();
    updateEditState(entry);
    updateEditCount();
  }

  function updateEditState(entry) {
    var length = chars(entry.textarea.value.trim());
    var over = entry.limit !== null && length > entry.limit;
    entry.count.textContent = length + (entry.limit !== null ? " of " + entry.limit : "") + " characters" +
      (over ? ": " + (length - entry.limit) + " over the limit" : "");
    entry.count.className = "edit-count-line" + (over ? " over" : "");
    var edited = editedValue(entry) !== null;
    entry.editedBadge.hidden = !edited;
    entry.article.classList.toggle("edited", edited);
    entry.revert.disabled = !edited;
  }

  function updateEditCount() {
    var count = editedEntries().length;
    $("edit-count").textContent = count === 0
      ? "No alt text edited yet."
      : count + (count === 1 ? " alt text edited." : " alt texts edited.");
  }

  function reviewLines(reviewer) {
    return editedEntries().map(function (entry) {
      var item = entry.item;
      return JSON.stringify({
        bucket: item.bucket,
        key: item.key,
        version: typeof item.version === "string" ? item.version : "",
        alt_text: editedValue(entry).trim(),
        content_sha256: item.content_sha256 || null,
        reviewed_by: reviewer,
      });
    });
  }

  function download() {
    var message = $("download-message");
    var reviewer = $("reviewer").value.trim();
    var lines = reviewLines(reviewer);
    message.className = "download-message error";
    if (!lines.length) {
      message.textContent = "Nothing to download: edit an alt text first.";
      return;
    }
    if (!reviewer) {
      message.textContent = "Enter your name first: it is stored with each reviewed alt text.";
      $("reviewer").focus();
      return;
    }
    var stamp = new Date().toISOString().replace(/[-:]/g, "").replace(/\..*$/, "");
    var name = "sightline-review-" + stamp + ".jsonl";
    var blob = new Blob([lines.join("\n") + "\n"], { type: "application/x-ndjson" });
    var url = URL.createObjectURL(blob);
    var link = el("a", { href: url, download: name, hidden: true });
    document.body.appendChild(link);
    link.click();
    link.remove();
    window.setTimeout(function () { URL.revokeObjectURL(url); }, 60000);
    message.className = "download-message";
    message.textContent = "Downloaded " + name + ": " + lines.length +
      (lines.length === 1 ? " reviewed alt text." : " reviewed alt texts.");
  }

  // --- Filter, sort, search.

  function fillSelect(select, values, label) {
    values.forEach(function (value) {
      select.appendChild(el("option", { value: value, text: label ? label(value) : value }));
    });
  }

  function distinct(values) {
    var seen = {};
    return values.filter(function (value) {
      if (value === null || value === undefined || value === "" || seen[value]) return false;
      seen[value] = true;
      return true;
    }).sort();
  }

  function matches(entry, query, status, profile, flag) {
    var item = entry.item;
    if (status && item.status !== status) return false;
    if (profile && item.profile !== profile) return false;
    var flags = item.flags || [];
    if (flag === "*" && !flags.length) return false;
    if (flag === "-" && flags.length) return false;
    if (flag && flag !== "*" && flag !== "-" && !flags.some(function (f) { return f.code === flag; })) return false;
    if (query) {
      var words = query.split(/\s+/).filter(Boolean);
      for (var i = 0; i < words.length; i++) if (entry.search.indexOf(words[i]) < 0) return false;
    }
    return true;
  }

  function sortValue(entry, field) {
    var item = entry.item;
    switch (field) {
      case "status": return STATUS_ORDER.hasOwnProperty(item.status) ? STATUS_ORDER[item.status] : 9;
      case "flags": return (item.flags || []).length;
      case "cost": return number(item.cost) === null ? -1 : item.cost;
      case "alt": return chars(effectiveAlt(item));
      case "processed": return item.processed_at || "";
      default: return item.key || "";
    }
  }

  function compare(a, b) {
    if (typeof a === "number" && typeof b === "number") return a - b;
    return String(a).localeCompare(String(b), "en");
  }

  function apply() {
    var query = search.value.trim().toLowerCase();
    var status = statusFilter.value;
    var profile = profileFilter.value;
    var flag = flagFilter.value;
    var field = sortSelect.value;
    var direction = orderSelect.value === "desc" ? -1 : 1;
    var visible = cards.filter(function (entry) { return matches(entry, query, status, profile, flag); });
    visible.sort(function (a, b) {
      return direction * compare(sortValue(a, field), sortValue(b, field)) ||
        compare(a.item.key || "", b.item.key || "") || a.index - b.index;
    });
    var fragment = document.createDocumentFragment();
    visible.forEach(function (entry) { fragment.appendChild(entry.li); });
    list.replaceChildren(fragment);
    state.visible = visible;
    if (state.current && visible.indexOf(state.current) < 0) setCurrent(null);
    $("empty").hidden = visible.length > 0;
    var total = cards.length;
    $("result-count").textContent = visible.length === total
      ? "Showing all " + total + (total === 1 ? " object." : " objects.")
      : "Showing " + visible.length + " of " + total + " objects.";
  }

  // --- Keyboard: / search, j/k (or the arrows on an object) next and previous, e edit, Esc back to the object.

  function setCurrent(entry) {
    cards.forEach(function (other) { other.article.classList.toggle("current", other === entry); });
    state.current = entry;
  }

  // The object holding the focus, else the last one that held it (while it is shown), else none.
  function currentEntry() {
    var active = document.activeElement;
    for (var i = 0; i < state.visible.length; i++) {
      if (state.visible[i].article.contains(active)) return state.visible[i];
    }
    return state.current && state.visible.indexOf(state.current) >= 0 ? state.current : null;
  }

  function move(step) {
    if (!state.visible.length) return;
    var entry = currentEntry();
    var index = entry ? state.visible.indexOf(entry) + step : step > 0 ? 0 : state.visible.length - 1;
    index = Math.max(0, Math.min(state.visible.length - 1, index));
    var next = state.visible[index];
    next.article.focus();
    next.article.scrollIntoView({ block: "nearest" });
    setCurrent(next);
  }

  function onKey(event) {
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
    var target = event.target;
    var typing = target instanceof HTMLElement &&
      (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
    if (typing) {
      if (event.key === "Escape" && target.tagName === "TEXTAREA") {
        var owner = cards.filter(function (entry) { return entry.textarea === target; })[0];
        if (owner) {
          event.preventDefault();
          owner.article.focus();
        }
      }
      return;
    }
    var onCard = target instanceof HTMLElement && target.classList.contains("card");
    if (event.key === "/") {
      event.preventDefault();
      search.focus();
      search.select();
    } else if (event.key === "j" || (onCard && event.key === "ArrowDown")) {
      event.preventDefault();
      move(1);
    } else if (event.key === "k" || (onCard && event.key === "ArrowUp")) {
      event.preventDefault();
      move(-1);
    } else if (event.key === "e") {
      var entry = currentEntry();
      if (entry) {
        event.preventDefault();
        toggleEditor(entry, true);
      }
    }
  }

  // --- Start.

  ITEMS.forEach(function (item, index) { cards.push(card(item, index)); });
  fillSelect(statusFilter, distinct(ITEMS.map(function (item) { return item.status; })));
  fillSelect(profileFilter, distinct(ITEMS.map(function (item) { return item.profile; })));
  var codes = distinct([].concat.apply([], ITEMS.map(function (item) {
    return (item.flags || []).map(function (flag) { return flag.code; });
  })));
  fillSelect(flagFilter, codes, flagLabel);

  $("controls").addEventListener("submit", function (event) { event.preventDefault(); });
  $("controls").addEventListener("reset", function () { window.setTimeout(apply, 0); });
  var pending = null;
  search.addEventListener("input", function () {
    window.clearTimeout(pending);
    pending = window.setTimeout(apply, 150);
  });
  [statusFilter, profileFilter, flagFilter, sortSelect, orderSelect].forEach(function (select) {
    select.addEventListener("change", apply);
  });
  $("download").addEventListener("click", download);
  document.addEventListener("keydown", onKey);
  updateEditCount();
  apply();
})();
