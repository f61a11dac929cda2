// Formatting, fetching and the live-update stream shared by the pages.

const ESCAPES = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };

export function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ESCAPES[c]);
}

/** Significant digits of an amount under a dollar: cobalt_common.pricing.USD_SIGNIFICANT_DIGITS. */
export const USD_DIGITS = 3;

/**
 * Dollars, by the rule of cobalt_common.pricing.format_usd: $1 and more with
 * cents and thousands separators, less with USD_DIGITS significant digits,
 * never in scientific notation; zero is "$0.00", infinity "unbounded". Both
 * round the decimal String(value) shows, ties away from zero: 1.005 reads "$1.01".
 */
export function usd(value) {
  if (value == null) return "";
  if (Number.isNaN(value)) return "unknown";
  if (!Number.isFinite(value)) return "unbounded";
  if (value === 0) return "$0.00";
  const sign = value < 0 ? "-" : "";
  // The shortest decimal that reads back as the value: its digits, and the power of ten of the first.
  const [mantissa, exponent] = Math.abs(value).toExponential().split("e");
  const digits = mantissa.replace(".", "");
  const e = Number(exponent);
  const small = roundDigits(digits, USD_DIGITS);
  const power = e + small.length - USD_DIGITS; // of the first digit, once rounded
  if (power < 0) return `${sign}$0.${"0".repeat(-power - 1)}${small.slice(0, USD_DIGITS)}`;
  const cents = roundDigits(digits, e + 3); // the amount in cents: e + 1 digits of dollars and 2 more
  const whole = cents.slice(0, -2).replace(/\B(?=(\d{3})+$)/g, ",");
  return `${sign}$${whole}.${cents.slice(-2)}`;
}

/** The first `keep` (at least 1) of `digits`, rounded half away from zero: a carry makes one digit more. */
function roundDigits(digits, keep) {
  if (digits.length <= keep) return digits.padEnd(keep, "0");
  const kept = digits.slice(0, keep);
  return digits[keep] >= "5" ? (BigInt(kept) + 1n).toString() : kept;
}

/** "250 ms", "2.3 s", "1h 30m": the same words as cobalt's command line. */
export function duration(seconds) {
  if (seconds == null) return "";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${(Math.round(seconds * 10) / 10).toString()} s`;
  let rest = Math.round(seconds);
  const parts = [];
  for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]]) {
    const n = Math.floor(rest / size);
    rest -= n * size;
    if (n) parts.push(`${n}${unit}`);
  }
  return parts.join(" ");
}

// Intl formatters are costly to make: one of each, reused for every cell.
const TIME = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
const DATE_TIME = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
});
const NUMBER = new Intl.NumberFormat("en-US");
const midnight = new Date();
midnight.setHours(0, 0, 0, 0);
const TODAY_START = midnight.getTime() / 1000;

export function when(ts) {
  if (ts == null) return "";
  const d = new Date(ts * 1000);
  return ts >= TODAY_START && ts < TODAY_START + 86400 ? TIME.format(d) : DATE_TIME.format(d);
}

export function num(n) {
  return NUMBER.format(n);
}

export const STATUS_ORDER = [
  "RUNNING", "PENDING", "NEW", "COMPLETED", "FAILED", "TIMED_OUT",
  "BUDGET_EXCEEDED", "CANCELLED", "SKIPPED",
];

export function statusLabel(status) {
  return status.toLowerCase().replace(/_/g, " ");
}

export function badge(status) {
  return `<span class="st st-${esc(status)}">${esc(statusLabel(status))}</span>`;
}

export function countPills(counts) {
  const keys = Object.keys(counts).sort((a, b) => STATUS_ORDER.indexOf(a) - STATUS_ORDER.indexOf(b));
  return keys
    .map((k) => `<span class="pill st-${esc(k)}" data-status="${esc(k)}" title="${esc(statusLabel(k))}">${num(counts[k])} ${esc(statusLabel(k))}</span>`)
    .join(" ");
}

/** How a deployment takes requests: with its token, or open to anyone who reaches the gateway. */
export function authTag(auth) {
  return auth
    ? '<span class="tag" title="Requests need the deployment\'s token">token</span>'
    : '<span class="tag open" title="auth=False: anyone who reaches the gateway can call it">OPEN (no auth)</span>';
}

/** How often an open deployment page reads again what accrues without an event: cost, requests in flight. */
export const ACCRUE_MS = 5000;

/** Re-reads a page's data at most every `ms` however often it is asked to. */
export function throttled(read, ms = 250) {
  let pending = null;
  return () => {
    if (pending) return;
    pending = setTimeout(async () => {
      pending = null;
      await read();
    }, ms);
  };
}

export const EMULATED = '<span class="tag emu" title="Emulated GPUs: the task ran on the CPU">emulated</span>';

export class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export async function api(path) {
  // No custom headers: the page preloads its data, and this must match that request.
  const response = await fetch(path, { credentials: "same-origin" });
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    throw new HttpError(response.status, (body && body.error) || `${response.status} ${response.statusText}`);
  }
  return body;
}

export function showError(main, err) {
  main.innerHTML = `<div class="error-box"><h2>${err.status === 401 ? "Token needed" : "Could not load this page"}</h2><p>${esc(err.message || err)}</p></div>`;
}

/**
 * Subscribes to live updates: `onMessage(msg)` for changes, `onResync()` when
 * the page may have missed some and should read everything again. `key`: a
 * dispatch id (`kind` "dispatch"), or a deployment's name, "" for all of them
 * (`kind` "deployment").
 */
export function live(key, since, onMessage, onResync, kind = "dispatch") {
  const dot = document.getElementById("live");
  const params = new URLSearchParams();
  if (key || kind !== "dispatch") params.set(kind, key ?? "");
  if (since) params.set("since", String(since));
  const source = new EventSource(`/api/events?${params}`);
  source.onopen = () => {
    dot.className = "live on";
    dot.textContent = "live";
  };
  source.onerror = () => {
    dot.className = "live off";
    dot.textContent = source.readyState === EventSource.CLOSED ? "offline" : "reconnecting";
  };
  source.onmessage = (event) => {
    const msg = JSON.parse(event.data);
    if (msg.type === "resync") onResync();
    else onMessage(msg);
  };
  return source;
}

/** Seconds on the controller's clock, from the offset seen when data was read. */
export function clock(asOf) {
  const offset = asOf - Date.now() / 1000;
  return () => Date.now() / 1000 + offset;
}
