/* The mosaic page: tiles sampled from a slide's TFRecord, each linking to the slide view. */
"use strict";

let seed = 0;

async function showMosaic() {
  const id = ts.param("id");
  const n = document.getElementById("n").value;
  const data = await ts.json(`/api/mosaic?id=${ts.q(id)}&n=${n}&seed=${seed}`);
  document.getElementById("title").textContent = `${id}: mosaic`;
  document.getElementById("count").textContent = `${data.tiles.length} of ${data.total ?? "?"} tiles`;
  const box = document.getElementById("mosaic");
  box.replaceChildren();
  for (const t of data.tiles) {
    const img = ts.el("img", { src: t.image, alt: `${t.loc_x}, ${t.loc_y}`,
      title: `loc ${t.loc_x}, ${t.loc_y}`, loading: "lazy" });
    box.append(ts.el("a", { href: `/slide.html?id=${ts.q(id)}&x=${t.loc_x}&y=${t.loc_y}` }, img));
  }
}

document.getElementById("n").addEventListener("change", () => showMosaic());
document.getElementById("reshuffle").addEventListener("click", () => { seed += 1; showMosaic(); });
showMosaic().catch((err) => {
  document.getElementById("mosaic").textContent = `Error: ${err.message}`;
});
