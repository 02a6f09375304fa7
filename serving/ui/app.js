// The /ui page: everything it shows comes from the service's public JSON API, as any client gets it.
//   GET  /readyz                        the served model
//   GET  /v1/users, /v1/users/{id}      users with stored state, one user's history
//   GET  /v1/items, /v1/items/{id}      the candidate set, an item's title, media links, cold flag, shares
//   POST /v1/score (explain: true)      scores with each item's modality shares and cold flag
//   POST /v1/items (multipart)          a new item, encoded by the model's own encoders
// Text from the API is only ever set as textContent (never parsed as HTML).
"use strict";

const COLOURS = { id: "#8c8c8c", title: "#4e79a7", image: "#f28e2b", audio: "#59a14f" };
const EXTRA_COLOURS = ["#b07aa1", "#76b7b2", "#edc948", "#e15759", "#9c755f"];
const HISTORY_SHOWN = 12;

const state = { usersAfter: null, uploaded: [], items: new Map(), run: 0 };
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

class ApiError extends Error {}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const detail = body && body.detail;
    const what = detail ? `${detail.field}: ${detail.message}` : `HTTP ${response.status}`;
    throw new ApiError(`${options.method || "GET"} ${path.split("?")[0]} → ${response.status} ${what}`);
  }
  return body;
}

function show(message, kind = "info") {
  const status = $("status");
  status.textContent = message;
  status.className = kind;
}

function colour(modality, index) {
  return COLOURS[modality] || EXTRA_COLOURS[index % EXTRA_COLOURS.length];
}

function percent(x) {
  return `${(100 * x).toFixed(0)}%`;
}

// ------------------------------------------------------------------ items
async function item(id) {
  if (!state.items.has(id)) state.items.set(id, api(`/v1/items/${id}`));
  try {
    return await state.items.get(id);
  } catch (error) {
    state.items.delete(id);
    throw error;
  }
}

function sharesView(shares) {
  if (!shares) return el("div", { class: "shares muted", text: "no modal attention in this model" });
  const names = Object.keys(shares);
  const bar = el("div", { class: "share-bar", role: "img" });
  const legend = el("div", { class: "share-legend" });
  names.forEach((name, i) => {
    const value = shares[name];
    const segment = el("span", { class: "segment", title: `${name} ${percent(value)}` });
    segment.style.width = `${100 * value}%`;
    segment.style.background = colour(name, i);
    bar.append(segment);
    const key = el("span", { class: "key", dataset: { modality: name, share: String(value) } });
    const swatch = el("i");
    swatch.style.background = colour(name, i);
    key.append(swatch, `${name} ${percent(value)}`);
    legend.append(key);
  });
  bar.setAttribute("aria-label", names.map((n) => `${n} ${percent(shares[n])}`).join(", "));
  return el("div", { class: "shares" }, bar, legend);
}

function mediaView(info, large) {
  const image = info.media && info.media.image;
  const picture = image
    ? el("img", { class: large ? "poster" : "thumb", src: image, alt: info.title || `item ${info.item_id}` })
    : el("div", { class: `${large ? "poster" : "thumb"} no-image`, text: "no image" });
  const audio = info.media && info.media.audio
    ? el("audio", { controls: true, preload: "none", src: info.media.audio })
    : null;
  return [picture, audio];
}

function titleView(info) {
  return el(
    "div",
    { class: "title" },
    el("span", { class: "name", text: info.title || "(no title)" }),
    el("span", { class: "muted", text: ` item ${info.item_id}` }),
    info.cold ? el("span", { class: "badge cold", text: "cold" }) : null,
  );
}

// ------------------------------------------------------------------ users
async function loadUsers() {
  const query = state.usersAfter === null ? "" : `&after=${state.usersAfter}`;
  const page = await api(`/v1/users?limit=200${query}`);
  const select = $("user");
  for (const user of page.users) {
    select.append(el("option", { value: user.user_id, text: `user ${user.user_id} (${user.history_length} clicks)` }));
  }
  state.usersAfter = page.next_after;
  $("more-users").hidden = page.next_after === null;
  return page.users;
}

// ------------------------------------------------------------------ rendering
async function renderHistory(userId, run) {
  const cards = document.querySelector("#history .cards");
  let user;
  try {
    user = await api(`/v1/users/${userId}`);
  } catch (error) {
    cards.replaceChildren();
    throw error;
  }
  const recent = user.history.slice(-HISTORY_SHOWN).reverse();
  const infos = await Promise.all(recent.map(item));
  if (run !== state.run) return;
  $("history-note").textContent = `(${user.history.length} clicked items, newest first)`;
  cards.replaceChildren(
    ...infos.map((info) => el("figure", { class: "card", dataset: { itemId: info.item_id } }, ...mediaView(info, true), titleView(info))),
  );
  if (!infos.length) cards.append(el("p", { class: "muted", text: "no stored history: scored as a new user" }));
}

async function candidateIds() {
  const wanted = Math.max(1, Number($("n-candidates").value) || 100);
  const ids = [];
  let after = null;
  while (ids.length < wanted) {
    const limit = Math.min(1000, wanted - ids.length);
    const page = await api(`/v1/items?limit=${limit}${after === null ? "" : `&after=${after}`}`);
    ids.push(...page.items.map((i) => i.item_id));
    if (page.next_after === null) break;
    after = page.next_after;
  }
  for (const id of state.uploaded) if (!ids.includes(id)) ids.push(id);
  return ids;
}

function context() {
  const text = $("context").value.trim() || "{}";
  try {
    const value = JSON.parse(text);
    if (value && typeof value === "object" && !Array.isArray(value)) return value;
  } catch (error) {
    // falls through to the message below
  }
  throw new ApiError('context: not a JSON object (e.g. {"hour": 20, "device": "mobile"})');
}

function rowView(entry, rank, top, info) {
  const bar = el("div", { class: "score-bar" }, el("div", { class: "fill" }));
  bar.firstChild.style.width = `${top > 0 ? (100 * entry.score) / top : 0}%`;
  const [picture, audio] = mediaView(info, false);
  return el(
    "li",
    { class: "row", dataset: { itemId: entry.item_id, score: String(entry.score), cold: String(entry.cold) } },
    picture,
    el(
      "div",
      { class: "body" },
      el("div", { class: "line" }, el("span", { class: "rank", text: `#${rank}` }), titleView({ ...info, cold: entry.cold })),
      el("div", { class: "line" }, bar, el("span", { class: "score", text: entry.score.toFixed(4) })),
      el("div", { class: "line" }, sharesView(entry.modality_shares), audio),
    ),
  );
}

async function renderRanking(userId, run) {
  const candidates = await candidateIds();
  const k = Math.max(1, Number($("top-k").value) || 10);
  const body = { user_id: userId, candidates, context: context(), explain: true };
  const result = await api("/v1/score", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  // The service's own order for top_k: by score, ties in candidate order (a stable sort).
  const ranked = result.scores.map((s, i) => [s, i]).sort((a, b) => b[0].score - a[0].score || a[1] - b[1]).map((p) => p[0]);
  const top = ranked.slice(0, k);
  const infos = await Promise.all(top.map((s) => item(s.item_id)));
  if (run !== state.run) return;
  $("model").textContent = `model ${result.model_version} · history from ${result.history_source}`;
  $("ranking-title").textContent = `Top ${top.length} of ${candidates.length} candidates for user ${userId}`;
  const best = top.length ? top[0].score : 0;
  document.querySelector("#ranking .rows").replaceChildren(...top.map((s, i) => rowView(s, i + 1, best, infos[i])));
  await renderUploaded(ranked, best, run);
}

async function renderUploaded(ranked, best, run) {
  const target = $("new-item");
  const last = state.uploaded[state.uploaded.length - 1];
  if (last === undefined) return;
  const rank = ranked.findIndex((s) => s.item_id === last);
  if (rank < 0) return;
  const info = await item(last);
  if (run !== state.run) return;
  const entry = ranked[rank];
  const row = rowView(entry, rank + 1, best, info);
  target.replaceChildren(
    el("p", { class: "note", text: `Item ${last} ranks #${rank + 1} of ${ranked.length} for this user, score ${entry.score.toFixed(4)}.` }),
    el("ol", { class: "rows" }, row),
  );
}

async function render() {
  const userId = Number($("user").value);
  if (!$("user").value) return;
  const run = ++state.run;
  show(`scoring for user ${userId}…`);
  try {
    await Promise.all([renderHistory(userId, run), renderRanking(userId, run)]);
    if (run === state.run) show(`user ${userId}: scored`, "ok");
  } catch (error) {
    if (run === state.run) show(error.message, "error");
  }
}

// ------------------------------------------------------------------ upload
async function upload(event) {
  event.preventDefault();
  const form = new FormData();
  const id = $("new-id").value.trim();
  form.append("item_id", id);
  if ($("new-title").value.trim()) form.append("title", $("new-title").value);
  for (const kind of ["image", "audio"]) {
    const file = $(`new-${kind}`).files[0];
    if (file) form.append(kind, file);
  }
  const key = $("api-key").value;
  if (key) sessionStorage.setItem("recsys-api-key", key);
  show(`encoding item ${id}…`);
  try {
    const created = await api("/v1/items", { method: "POST", headers: key ? { "X-API-Key": key } : {}, body: form });
    state.items.delete(created.item_id);
    state.uploaded = state.uploaded.filter((i) => i !== created.item_id).concat([created.item_id]);
    await render();
  } catch (error) {
    show(error.message, "error");
  }
}

// ------------------------------------------------------------------ start
async function start() {
  $("api-key").value = sessionStorage.getItem("recsys-api-key") || "";
  $("controls").addEventListener("submit", (event) => {
    event.preventDefault();
    render();
  });
  $("user").addEventListener("change", render);
  $("upload-form").addEventListener("submit", upload);
  $("more-users").addEventListener("click", () => loadUsers().catch((error) => show(error.message, "error")));
  try {
    const ready = await api("/readyz");
    $("model").textContent = `model ${ready.model_version} · ${ready.catalogue_items} catalogue items`;
    const users = await loadUsers();
    const first = users.find((u) => u.history_length > 0) || users[0];
    if (!first) {
      show("no users with stored state: start the service with --data DIR to seed them", "error");
      return;
    }
    $("user").value = String(first.user_id);
    document.body.dataset.ready = "true";
    await render();
  } catch (error) {
    show(error.message, "error");
  }
}

start();
