// Minerva's chat page: plain JavaScript over the server's own API (/v1/models, model load,
// unload and pull, /v1/chat/completions streamed). Conversations and settings stay in this
// browser's local storage; text is only ever set as text, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const STORE = "minerva.chat.v1";

const saved = JSON.parse(localStorage.getItem(STORE) || "null") || {};
const state = {
  conversations: saved.conversations || [],
  current: saved.current || null,
  settings: Object.assign(
    { model: "", system: "", temperature: 0.7, maxTokens: 1024, apiKey: "" },
    saved.settings,
  ),
};
let running = null; // the AbortController of the answer being streamed

function save() {
  localStorage.setItem(STORE, JSON.stringify(state));
}

function headers(json) {
  const h = json ? { "Content-Type": "application/json" } : {};
  if (state.settings.apiKey) h.Authorization = "Bearer " + state.settings.apiKey;
  return h;
}

/** A request to the server; a 401 asks for the API key. */
async function api(method, path, body, signal) {
  const response = await fetch(path, {
    method,
    headers: headers(body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body),
    signal,
  });
  if (response.status === 401) {
    $("key-box").hidden = false;
    throw new Error("this server needs an API key (left)");
  }
  if (!response.ok) throw new Error(await errorText(response));
  return response;
}

async function errorText(response) {
  try {
    const body = await response.json();
    const error = body.error;
    return (error && (error.message || error)) || response.statusText;
  } catch {
    return response.status + " " + response.statusText;
  }
}

/** The data of each server-sent event of `response`, parsed. */
async function* events(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const data = buffer.slice(0, end).split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart())
        .join("\n");
      buffer = buffer.slice(end + 2);
      if (data && data !== "[DONE]") yield JSON.parse(data);
    }
  }
}

function showError(message) {
  $("error").textContent = message || "";
  $("error").hidden = !message;
}

function bytes(n) {
  if (n == null) return "?";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return n.toFixed(i ? 1 : 0) + " " + units[i];
}

// --- models -------------------------------------------------------------------------------

let models = [];

async function loadModels() {
  try {
    const response = await api("GET", "/v1/models");
    models = (await response.json()).data;
  } catch (e) {
    showError(e.message);
    return;
  }
  const select = $("model");
  const chosen = select.value || state.settings.model;
  select.replaceChildren(...models.map((m) => {
    const option = document.createElement("option");
    option.value = m.id;
    option.textContent = m.id + (m.loaded ? " ●" : "");
    return option;
  }));
  if (models.some((m) => m.id === chosen)) select.value = chosen;
  showModel();
}

function showModel() {
  const m = models.find((m) => m.id === $("model").value);
  state.settings.model = $("model").value;
  save();
  if (!m) { $("model-status").textContent = ""; return; }
  const parts = [m.status, m.engine, m.format, m.size_bytes != null && bytes(m.size_bytes) + " on disk",
    m.estimated_memory_bytes && "~" + bytes(m.estimated_memory_bytes) + " in memory",
    m.expires_in_s != null && "unloads in " + m.expires_in_s + " s", m.error];
  $("model-status").textContent = parts.filter(Boolean).join(" · ");
}

async function loadOrUnload(action) {
  const id = $("model").value;
  if (!id) return;
  $("model-status").textContent = action === "load" ? "loading…" : "unloading…";
  try {
    await api("POST", `/v1/models/${encodeURIComponent(id)}/${action}`);
  } catch (e) {
    showError(e.message);
  }
  await loadModels();
}

async function pull(reference) {
  const progress = $("pull-progress");
  const status = $("pull-status");
  progress.hidden = false;
  progress.value = 0;
  status.textContent = "pulling " + reference + "…";
  const files = new Map();
  try {
    const response = await api("POST", "/v1/models/pull", { model: reference });
    for await (const event of events(response)) {
      if (event.error) throw new Error(event.error.message || event.error);
      if (event.status === "downloading") {
        files.set(event.file, [event.completed || 0, event.total || 0]);
        const [done, total] = [...files.values()].reduce((a, f) => [a[0] + f[0], a[1] + f[1]], [0, 0]);
        progress.value = total ? done / total : 0;
        status.textContent = `${bytes(done)} of ${bytes(total)}`;
      } else if (event.status === "success") {
        progress.value = 1;
        status.textContent = "pulled " + event.model;
        state.settings.model = event.model;
        $("model").value = "";
      }
    }
  } catch (e) {
    status.textContent = "";
    showError(e.message);
  }
  await loadModels();
}

// --- conversations ------------------------------------------------------------------------

function current() {
  return state.conversations.find((c) => c.id === state.current) || null;
}

function newConversation() {
  const conversation = { id: Date.now().toString(36), title: "New chat", messages: [] };
  state.conversations.unshift(conversation);
  state.current = conversation.id;
  save();
  render();
  return conversation;
}

function render() {
  $("conversations").replaceChildren(...state.conversations.map((c) => {
    const item = document.createElement("li");
    item.textContent = c.title;
    item.className = c.id === state.current ? "current" : "";
    item.onclick = () => { if (!running) { state.current = c.id; save(); render(); } };
    return item;
  }));
  const conversation = current();
  $("messages").replaceChildren(...(conversation ? conversation.messages : []).map(messageElement));
  $("messages").scrollTop = $("messages").scrollHeight;
}

function messageElement(message) {
  const el = document.createElement("div");
  el.className = "message " + message.role;
  const who = document.createElement("div");
  who.className = "who";
  who.textContent = message.role === "user" ? "you" : message.model || "assistant";
  const reasoning = document.createElement("details");
  reasoning.append(Object.assign(document.createElement("summary"), { textContent: "Reasoning" }));
  reasoning.append(document.createElement("div"));
  const content = document.createElement("div");
  content.className = "content";
  const calls = document.createElement("div");
  el.append(who, reasoning, content, calls);
  update(el, message);
  return el;
}

/** Show `message`'s current text, reasoning, tool calls and state in its element. */
function update(el, message) {
  const [, reasoning, content, calls] = el.children;
  reasoning.hidden = !message.reasoning;
  reasoning.lastChild.textContent = message.reasoning || "";
  content.textContent = message.content;
  calls.replaceChildren(...(message.toolCalls || []).map((call) => {
    const line = document.createElement("div");
    line.className = "tool-call";
    line.textContent = `${call.name}(${call.arguments})`;
    return line;
  }));
  if (message.state) el.dataset.state = message.state;
  if (message.chunks != null) el.dataset.chunks = message.chunks;
  $("messages").scrollTop = $("messages").scrollHeight;
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
}

async function send(text) {
  if (running || !text.trim()) return;
  const model = $("model").value;
  if (!model) { showError("pick a model first"); return; }
  showError("");
  const conversation = current() || newConversation();
  if (!conversation.messages.length) conversation.title = text.slice(0, 60);
  conversation.messages.push({ role: "user", content: text });
  const history = conversation.messages
    .filter((m) => m.content && m.state !== "failed")
    .map((m) => ({ role: m.role, content: m.content }));
  const system = state.settings.system.trim();
  const answer = { role: "assistant", model, content: "", reasoning: "", toolCalls: [], state: "streaming", chunks: 0 };
  conversation.messages.push(answer);
  save();
  render();
  const el = $("messages").lastChild;
  running = new AbortController();
  setBusy(true);
  try {
    const response = await api("POST", "/v1/chat/completions", {
      model,
      stream: true,
      messages: system ? [{ role: "system", content: system }, ...history] : history,
      temperature: Number(state.settings.temperature),
      max_tokens: Number(state.settings.maxTokens),
    }, running.signal);
    for await (const chunk of events(response)) {
      if (chunk.error) throw new Error(chunk.error.message || chunk.error);
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
      if (!delta) continue;
      answer.reasoning += delta.reasoning_content || "";
      answer.content += delta.content || "";
      for (const call of delta.tool_calls || []) {
        const known = answer.toolCalls[call.index] ||= { name: "", arguments: "" };
        known.name += (call.function && call.function.name) || "";
        known.arguments += (call.function && call.function.arguments) || "";
      }
      answer.chunks++;
      update(el, answer);
    }
    answer.state = "done";
  } catch (e) {
    if (e.name === "AbortError") {
      answer.state = "stopped";
    } else {
      answer.state = "failed";
      showError(e.message);
    }
  } finally {
    running = null;
    setBusy(false);
    save();
    update(el, answer);
    loadModels();
  }
}

// --- wiring -------------------------------------------------------------------------------

function bindSetting(id, key) {
  $(id).value = state.settings[key];
  const store = () => { state.settings[key] = $(id).value; save(); };
  $(id).addEventListener("input", store);
  $(id).addEventListener("change", store);
}

bindSetting("system", "system");
bindSetting("temperature", "temperature");
bindSetting("max-tokens", "maxTokens");
$("model").addEventListener("change", showModel);
$("load").onclick = () => loadOrUnload("load");
$("unload").onclick = () => loadOrUnload("unload");
$("new-chat").onclick = () => { if (!running) newConversation(); };
$("stop").onclick = () => running && running.abort();
$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("prompt").value;
  $("prompt").value = "";
  send(text);
});
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) {
    e.preventDefault();
    $("composer").requestSubmit();
  }
});
$("pull-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const reference = $("pull-ref").value.trim();
  if (reference) pull(reference);
});
$("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  state.settings.apiKey = $("api-key").value;
  save();
  $("key-box").hidden = true;
  showError("");
  loadModels();
});

render();
loadModels();
