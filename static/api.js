// The HTTP API and the native websocket, as used by the demo page.

/** An answer in the API's error shape. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Calls the HTTP API; resolves to the JSON answer or rejects with an ApiError. */
export async function api(method, path, { token, body } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "network", "The server cannot be reached. Check your connection.");
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const err = data && data.error ? data.error : { code: "http_" + response.status, message: response.statusText };
    throw new ApiError(response.status, err.code, err.message);
  }
  return data;
}

const PING_EVERY_MS = 25000;
const PONG_WITHIN_MS = 10000;
const MAX_BACKOFF_MS = 15000;

/**
 * The native websocket (`/ws`) with automatic reconnection.
 *
 * Each connection is opened with a one-use ticket (`POST /api/realtime/tickets`),
 * never with the token in the URL; a 401 for the ticket (the session ended) is
 * reported to `onUnauthorized` instead of retried.
 *
 * Every (re)connection sends `?since=<last notification id>`, so the server replays
 * exactly what was missed; `onNotification` sees each notification once. Room
 * subscriptions are remembered and sent again after a reconnect.
 */
export class Realtime {
  constructor({ token, lastNotificationId, onEvent, onNotification, onState, onUnauthorized }) {
    this.token = token;
    this.onUnauthorized = onUnauthorized;
    this.fetchingTicket = false;
    this.lastId = lastNotificationId || 0;
    this.seen = new Set();
    this.rooms = new Set();
    this.onEvent = onEvent;
    this.onNotification = onNotification;
    this.onState = onState;
    this.socket = null;
    this.attempt = 0;
    this.stopped = false;
    this.retryTimer = null;
    this.pingTimer = null;
    this.pongTimer = null;
    this.onOnline = () => this.reconnectNow();
    this.onOffline = () => this.drop();
    this.onVisible = () => {
      if (document.visibilityState === "visible") this.reconnectNow();
    };
    window.addEventListener("online", this.onOnline);
    window.addEventListener("offline", this.onOffline);
    document.addEventListener("visibilitychange", this.onVisible);
  }

  /** Opens the connection (and keeps it open until `stop`). */
  start() {
    this.stopped = false;
    this.connect();
  }

  /** Closes the connection for good. */
  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    this.clearHeartbeat();
    window.removeEventListener("online", this.onOnline);
    window.removeEventListener("offline", this.onOffline);
    document.removeEventListener("visibilitychange", this.onVisible);
    if (this.socket) {
      closeQuietly(this.socket);
      this.socket = null;
    }
  }

  /** Joins a room now and after every reconnect. */
  subscribe(room) {
    if (this.rooms.has(room)) return;
    this.rooms.add(room);
    this.send({ op: "subscribe", room });
  }

  /** Leaves a room. */
  unsubscribe(room) {
    if (!this.rooms.delete(room)) return;
    this.send({ op: "unsubscribe", room });
  }

  send(message) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(message));
    }
  }

  async connect() {
    if (this.stopped || this.socket || this.fetchingTicket) return;
    if (navigator.onLine === false) {
      this.onState("offline");
      return; // the "online" event reconnects
    }
    this.onState("connecting");
    // A one-use ticket per connection keeps the token itself out of the URL
    // (URLs end up in histories and proxy logs).
    let ticket;
    this.fetchingTicket = true;
    try {
      ({ ticket } = await api("POST", "/api/realtime/tickets", { token: this.token }));
    } catch (err) {
      this.fetchingTicket = false;
      if (this.stopped) return;
      this.onState("offline");
      if (err instanceof ApiError && err.status === 401) {
        if (this.onUnauthorized) this.onUnauthorized(err);
        return;
      }
      this.scheduleReconnect();
      return;
    }
    this.fetchingTicket = false;
    if (this.stopped || this.socket) return;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = new URLSearchParams({ ticket, since: String(this.lastId) });
    const socket = new WebSocket(`${scheme}//${location.host}/ws?${query}`);
    this.socket = socket;
    socket.onmessage = (message) => this.receive(message.data);
    socket.onclose = () => {
      if (this.socket !== socket) return;
      this.socket = null;
      this.clearHeartbeat();
      if (this.stopped) return;
      this.onState("offline");
      this.scheduleReconnect();
    };
  }

  /**
   * Closes the current connection (the network went away, or the heartbeat got no
   * answer); the next one resumes from the last notification seen.
   */
  drop() {
    const socket = this.socket;
    if (!socket) return;
    this.socket = null;
    closeQuietly(socket);
    this.clearHeartbeat();
    if (this.stopped) return;
    this.onState("offline");
    this.scheduleReconnect();
  }

  reconnectNow() {
    if (this.stopped || this.socket) return;
    clearTimeout(this.retryTimer);
    this.attempt = 0;
    this.connect();
  }

  scheduleReconnect() {
    clearTimeout(this.retryTimer);
    const base = Math.min(MAX_BACKOFF_MS, 500 * 2 ** this.attempt);
    this.attempt += 1;
    const delay = base / 2 + Math.random() * (base / 2);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  receive(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    switch (frame.event) {
      case "ready":
        this.attempt = 0;
        this.onState("live");
        for (const room of this.rooms) this.send({ op: "subscribe", room });
        this.startHeartbeat();
        break;
      case "pong":
        clearTimeout(this.pongTimer);
        break;
      case "new_notification": {
        const n = frame.data;
        if (!n || this.seen.has(n.id)) break;
        this.seen.add(n.id);
        if (n.id > this.lastId) this.lastId = n.id;
        this.onNotification(n);
        break;
      }
      default:
        this.onEvent(frame.event, frame.data);
    }
  }

  /** Remembers notifications already shown (from the HTTP listing). */
  markSeen(notifications) {
    for (const n of notifications) {
      this.seen.add(n.id);
      if (n.id > this.lastId) this.lastId = n.id;
    }
  }

  startHeartbeat() {
    this.clearHeartbeat();
    this.pingTimer = setInterval(() => {
      this.send({ op: "ping" });
      clearTimeout(this.pongTimer);
      this.pongTimer = setTimeout(() => {
        // No answer: the connection is dead even if the socket does not know yet.
        this.drop();
      }, PONG_WITHIN_MS);
    }, PING_EVERY_MS);
  }

  clearHeartbeat() {
    clearInterval(this.pingTimer);
    clearTimeout(this.pongTimer);
  }
}

/** Closes a socket without its handlers firing, also while it is still connecting. */
function closeQuietly(socket) {
  socket.onclose = null;
  socket.onmessage = null;
  if (socket.readyState === WebSocket.CONNECTING) {
    socket.onopen = () => socket.close(1000);
  } else {
    socket.close(1000);
  }
}

/** "3 min ago" style times. */
export function timeAgo(iso) {
  const then = new Date(iso).getTime();
  const s = Math.max(0, Math.round((Date.now() - then) / 1000));
  if (s < 45) return "just now";
  const m = Math.round(s / 60);
  if (m < 60) return `${m} min ago`;
  const h = Math.round(m / 60);
  if (h < 24) return `${h} h ago`;
  const d = Math.round(h / 24);
  if (d < 7) return `${d} d ago`;
  return new Date(iso).toLocaleDateString();
}

/** Creates an element: h("p", {class: "x", text: "hi"}, child...). */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") el.textContent = value;
    else if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const SVG_NS = "http://www.w3.org/2000/svg";

/** An inline icon from a list of SVG path strings. */
export function icon(paths, { filled = false } = {}) {
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("fill", filled ? "currentColor" : "none");
  svg.setAttribute("stroke", "currentColor");
  svg.setAttribute("stroke-width", "2");
  svg.setAttribute("stroke-linecap", "round");
  svg.setAttribute("stroke-linejoin", "round");
  for (const d of paths) {
    const path = document.createElementNS(SVG_NS, "path");
    path.setAttribute("d", d);
    svg.append(path);
  }
  return svg;
}

export const ICONS = {
  heart: ["M20.8 4.6a5.5 5.5 0 0 0-7.8 0L12 5.7l-1-1.1a5.5 5.5 0 0 0-7.8 7.8l1 1.1L12 21l7.8-7.5 1-1.1a5.5 5.5 0 0 0 0-7.8z"],
  bookmark: ["M19 21l-7-5-7 5V5a2 2 0 0 1 2-2h10a2 2 0 0 1 2 2z"],
  share: ["M4 12v8a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2v-8", "M16 6l-4-4-4 4", "M12 2v13"],
  comment: ["M21 11.5a8.4 8.4 0 0 1-9 8.4 8.5 8.5 0 0 1-3.8-.9L3 21l1.9-5.2A8.4 8.4 0 0 1 12 3a8.5 8.5 0 0 1 9 8.5z"],
  mail: ["M4 4h16a2 2 0 0 1 2 2v12a2 2 0 0 1-2 2H4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2z", "M22 6l-10 7L2 6"],
  bell: ["M18 8a6 6 0 0 0-12 0c0 7-3 9-3 9h18s-3-2-3-9", "M13.7 21a2 2 0 0 1-3.4 0"],
};

/**
 * A user's avatar hue (0-359), from the name alone: names are unique and never
 * change, and the name is all the sign-in form knows of a demo account, so the
 * same user gets the same color on the sign-in buttons, in the feed and
 * everywhere else. FNV-1a over the name's UTF-16 code units.
 */
export function avatarHue(name) {
  let hash = 0x811c9dc5;
  for (let i = 0; i < name.length; i++) {
    hash ^= name.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash % 360;
}

/** A round avatar with the name's first letter and the name's color ({@link avatarHue}). */
export function avatar(user, small = false) {
  const name = user.name || "?";
  const el = h("span", { class: small ? "avatar small" : "avatar", "aria-hidden": "true", dataset: { user: name } }, name.slice(0, 1));
  el.style.setProperty("--hue", String(avatarHue(name)));
  return el;
}
