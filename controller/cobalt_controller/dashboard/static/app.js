// The dashboard's entry point: picks the page from the path and renders it.
import { showError } from "./util.js";
import { renderDispatches } from "./dispatches.js";
import { renderDispatch } from "./dispatch.js";
import { renderCost } from "./cost.js";
import { renderDeployments } from "./deployments.js";
import { renderDeployment } from "./deployment.js";

const main = document.getElementById("main");
const path = location.pathname;

function mark(section) {
  for (const a of document.querySelectorAll("nav a")) {
    a.classList.toggle("current", a.dataset.nav === section);
  }
}

async function route() {
  const dispatch = path.match(/^\/dispatches\/([^/]+)$/);
  if (dispatch) {
    mark("dispatches");
    await renderDispatch(main, decodeURIComponent(dispatch[1]));
  } else if (path === "/deployments") {
    mark("deployments");
    await renderDeployments(main);
  } else if (path.match(/^\/deployments\/[^/]+$/)) {
    mark("deployments");
    await renderDeployment(main, decodeURIComponent(path.slice("/deployments/".length)));
  } else if (path === "/cost") {
    mark("cost");
    await renderCost(main);
  } else {
    mark("dispatches");
    await renderDispatches(main);
  }
}

route().catch((err) => showError(main, err));
