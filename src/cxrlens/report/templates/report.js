(function () {
  "use strict";
  // The explanation gallery. Data comes from the JSON island (no fetch: the page works from file://);
  // every text from the data is set with textContent, never parsed as HTML.
  var island = document.getElementById("report-data");
  if (!island) { return; }
  var data = JSON.parse(island.textContent);
  var g = data.gallery;
  var $ = function (id) { return document.getElementById(id); };
  if (!g || !g.maps || !g.maps.length || !$("g-image")) { return; }

  var key = function (image, model, method, label) { return JSON.stringify([image, model, method, label]); };
  var maps = new Map();
  g.maps.forEach(function (m) { maps.set(key(m.image, m.model, m.method, m.label), m); });
  var images = new Map();
  g.images.forEach(function (i) { images.set(i.id, i); });
  var figures = new Map();
  g.figures.forEach(function (f) { figures.set(JSON.stringify([f.image, f.label]), f); });

  var sel = { image: $("g-image"), label: $("g-label"), model: $("g-model"), method: $("g-method") };
  var base = $("g-base"), heat = $("g-heat"), gap = $("g-missing"), info = $("g-info");
  var opacity = $("g-opacity"), opacityValue = $("g-opacity-value");

  var fixed = function (value, digits) {
    return (typeof value === "number" && isFinite(value)) ? value.toFixed(digits) : "n/a";
  };
  var yesNo = function (value) {
    var span = document.createElement("span");
    span.className = value ? "yes" : "no";
    span.textContent = value ? "yes" : "no";
    return span;
  };
  var addFact = function (name, value) {
    var dt = document.createElement("dt");
    dt.textContent = name;
    var dd = document.createElement("dd");
    if (value instanceof Node) { dd.appendChild(value); } else { dd.textContent = String(value); }
    info.appendChild(dt);
    info.appendChild(dd);
  };

  var current = function () {
    return { image: sel.image.value, label: sel.label.value, model: sel.model.value, method: sel.method.value };
  };

  // Mark the options that have no map for the other current choices.
  var annotate = function (c) {
    var check = {
      label: function (v) { return maps.has(key(c.image, c.model, c.method, v)); },
      model: function (v) { return maps.has(key(c.image, v, c.method, c.label)); },
      method: function (v) { return maps.has(key(c.image, c.model, v, c.label)); }
    };
    Object.keys(check).forEach(function (name) {
      Array.prototype.forEach.call(sel[name].options, function (option) {
        option.textContent = option.value + (check[name](option.value) ? "" : " (not computed)");
      });
    });
  };

  var why = function (c) {
    if (c.model === g.ensemble && g.families[c.method] === "layer") {
      return c.method + " cannot explain the ensemble (it has no single layer); choose a member model.";
    }
    return "Not computed: " + c.method + " on " + c.model + " for " + c.label + " of this image. " +
      "Run cxrlens explain with --images, --models, --methods and --labels to add it.";
  };

  var showFigures = function (c) {
    var box = $("g-figures");
    while (box.firstChild) { box.removeChild(box.firstChild); }
    var f = figures.get(JSON.stringify([c.image, c.label]));
    if (!f) { return; }
    [[f.grid, "models × methods"], [f.occlusion, "occlusion across models"]].forEach(function (pair) {
      if (!pair[0]) { return; }
      var fig = document.createElement("figure");
      var img = document.createElement("img");
      img.src = pair[0];
      img.alt = pair[1];
      var cap = document.createElement("figcaption");
      cap.textContent = pair[1] + ": " + images.get(c.image).filename + " - " + c.label;
      fig.appendChild(img);
      fig.appendChild(cap);
      box.appendChild(fig);
    });
  };

  var update = function () {
    var c = current();
    var image = images.get(c.image);
    var m = maps.get(key(c.image, c.model, c.method, c.label));
    if (base.getAttribute("src") !== image.src) { base.src = image.src; }
    while (info.firstChild) { info.removeChild(info.firstChild); }
    $("g-title").textContent = c.label + " · " + c.model + " · " + c.method;
    addFact("Image", image.filename);
    addFact("Patient", image.patient_id || "n/a");
    if (image.offset || image.date) {
      addFact("Follow-up", (image.offset ? "day " + image.offset : "") + (image.date ? " (" + image.date + ")" : ""));
    }
    addFact("Fold", image.fold + " (explained by models that never trained on it)");
    addFact("Ground truth", image.truth_known ? (image.truth.join(", ") || "no label") : "not in " + g.labels_file);
    if (!image.image_available) { addFact("Image file", "not found or unreadable: heatmap shown on black"); }
    var probs = image.probabilities[c.model] || {};
    var probability = m ? m.probability : probs[c.label];
    addFact("Probability (" + c.label + ")", fixed(probability, 3));
    addFact("Label is true", m ? yesNo(m.true) : yesNo(image.truth.indexOf(c.label) >= 0));
    var threshold = m && typeof m.threshold === "number" ? m.threshold : 0.5;
    var predicted = m ? m.predicted : (typeof probability === "number" ? probability >= threshold : null);
    addFact("Predicted (p ≥ " + fixed(threshold, 2) + ", the run's threshold)", predicted === null ? "n/a" : yesNo(predicted));
    if (m) {
      heat.src = m.heat;
      heat.hidden = false;
      gap.hidden = true;
      gap.textContent = "";
      addFact("Method", c.method + (m.family ? " (" + m.family + ")" : ""));
      addFact("Parameters", m.parameters);
      addFact("Runtime", fixed(m.runtime_s, 3) + " s for " + (m.labels_in_call || 1) + " label(s); " +
        fixed(m.runtime_per_label_s, 3) + " s per label");
      addFact("Convergence delta", m.delta === null ? "n/a (not an additive method)" : m.delta.toExponential(2));
      addFact("Model fold", String(m.fold));
      if (m.checkpoint) { addFact("Checkpoint", m.checkpoint); }
      addFact("Colour scale", m.signed ? "signed: blue against, red for the label" : "positive: brighter is more relevant");
      $("g-legend-signed").hidden = !m.signed;
      $("g-legend-positive").hidden = m.signed;
      $("g-legend-low").textContent = m.signed ? "against" : "low";
      $("g-legend-high").textContent = m.signed ? "for" : "high";
    } else {
      heat.hidden = true;
      gap.hidden = false;
      gap.textContent = why(c);
      addFact("Map", "not computed");
    }
    annotate(c);
    showFigures(c);
  };

  var setOpacity = function () {
    heat.style.opacity = String(Number(opacity.value) / 100);
    opacityValue.textContent = opacity.value + " %";
  };

  Object.keys(sel).forEach(function (name) { sel[name].addEventListener("change", update); });
  opacity.addEventListener("input", setOpacity);
  setOpacity();
  update();
}());
