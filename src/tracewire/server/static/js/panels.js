// The page layout's moving parts: every panel collapses by a click on its title, and two
// splitters resize the side column and the subgraph panel (sizes kept in CSS variables on
// #layout, so the grid, not script, places everything). The graph canvas follows through its
// ResizeObserver.

const MIN_SIDE = 260;
const MIN_BOTTOM = 90;

export function bindPanels(layout) {
  layout.addEventListener("click", (event) => {
    const title = event.target.closest(".panel > h2");
    if (title) title.parentElement.classList.toggle("collapsed");
  });
  dragSplitter(layout, layout.querySelector("#side-splitter"), (rect, event) => {
    const width = Math.min(rect.width * 0.65, Math.max(MIN_SIDE, rect.right - event.clientX - 6));
    layout.style.setProperty("--side-width", `${Math.round(width)}px`);
  });
  dragSplitter(layout, layout.querySelector("#bottom-splitter"), (rect, event) => {
    const height = Math.min(rect.height * 0.75, Math.max(MIN_BOTTOM, rect.bottom - event.clientY - 6));
    layout.style.setProperty("--bottom-height", `${Math.round(height)}px`);
  });
}

function dragSplitter(layout, splitter, resize) {
  splitter.addEventListener("pointerdown", (event) => {
    event.preventDefault();
    splitter.setPointerCapture(event.pointerId);
    splitter.classList.add("active");
    const move = (e) => resize(layout.getBoundingClientRect(), e);
    const up = () => {
      splitter.classList.remove("active");
      splitter.removeEventListener("pointermove", move);
      splitter.removeEventListener("pointerup", up);
    };
    splitter.addEventListener("pointermove", move);
    splitter.addEventListener("pointerup", up);
  });
}
