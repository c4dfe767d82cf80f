/* The dataset page: every slide with its thumbnail, tile counts, status and failure. */
"use strict";

function rejectedText(rejected) {
  if (!rejected) return "–";
  const parts = Object.entries(rejected).filter(([, n]) => n > 0).map(([k, n]) => `${k} ${n}`);
  return parts.length ? parts.join(", ") : "none";
}

async function showDataset() {
  const data = await ts.json("/api/slides");
  document.getElementById("root").textContent = data.root || "";
  const body = document.querySelector("#slides tbody");
  let done = 0, failed = 0, stale = 0, tiles = 0;
  for (const s of data.slides) {
    if (s.stale) stale += 1;
    else if (s.status === "done") done += 1;
    if (s.status === "failed") failed += 1;
    if (!s.stale) tiles += s.tiles || 0;
    const id = ts.q(s.id);
    const thumb = (s.has_slide || s.preview)
      ? ts.el("img", { class: "thumb", src: `/api/thumbnail?id=${id}`, alt: s.name, loading: "lazy" })
      : ts.el("span", { class: "muted", text: "no image" });
    const name = s.has_slide
      ? ts.el("a", { href: `/slide.html?id=${id}` }, s.name)
      : ts.el("span", { title: s.slide_file || "" }, s.name, " ", ts.el("span", { class: "muted", text: "(slide file missing)" }));
    const links = ts.el("td");
    if (s.has_tfrecord) links.append(ts.el("a", { href: `/mosaic.html?id=${id}` }, "mosaic"), " ");
    if (s.preview) links.append(ts.el("a", { href: `/files/${s.preview.split("/").map(ts.q).join("/")}` }, "preview"));
    const failure = s.error ? `${s.error_type ? s.error_type + ": " : ""}${s.error}` : "";
    const problem = s.stale
      ? ts.el("td", { class: "error" }, `stale outputs, not shown: ${s.stale}`, failure ? ` (${failure})` : "")
      : failure
        ? ts.el("td", { class: "error" }, failure)
        : ts.el("td", { class: "muted", text: "" });
    const badge = s.stale
      ? ts.el("span", { class: "badge stale", title: s.stale }, "stale")
      : ts.el("span", { class: `badge ${s.status || ""}` }, s.status || "slide");
    const row = ts.el("tr", { "data-id": s.id },
      ts.el("td", {}, thumb),
      ts.el("td", {}, name),
      ts.el("td", { class: "muted" }, s.run || "–"),
      ts.el("td", {}, badge),
      ts.el("td", { class: "num" }, ts.fmt(s.tiles)),
      ts.el("td", { class: "num" }, ts.fmt(s.grid)),
      ts.el("td", {}, rejectedText(s.rejected)),
      problem,
      links);
    body.append(row);
  }
  const summary = data.mode === "runs"
    ? `${data.slides.length} slide${data.slides.length === 1 ? "" : "s"}: ${done} done, ${failed} failed${stale ? `, ${stale} stale` : ""}, ${tiles} tiles kept`
    : `${data.slides.length} slide${data.slides.length === 1 ? "" : "s"}`;
  document.getElementById("summary").textContent = summary;
}

showDataset().catch((err) => {
  document.getElementById("summary").textContent = `Error: ${err.message}`;
});
