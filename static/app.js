// The likewise demo app: accounts, a live feed, comments, private messages, who is
// online, and a notification bell, fed by the native websocket.

import { api, ApiError, Realtime, timeAgo, h, icon, ICONS, avatar } from "./api.js";

const TOKEN_KEY = "likewise.token";
const PAGE_SIZE = 10;
const NOTIFICATION_PAGE = 30;
// Users whose online dot is followed (one `presence:{id}` room each); the server
// allows 256 rooms per connection, and post rooms need some too.
const MAX_WATCHED = 120;
// User ids asked per GET /api/presence (the server's default limit is 256).
const PRESENCE_BATCH = 100;
const $ = (id) => document.getElementById(id);

const state = {
  token: null,
  me: null,
  users: new Map(),
  posts: new Map(), // id -> entry {post, el, ...}
  nextBefore: null,
  notifications: [], // newest first
  notificationsBefore: null, // where older notifications continue, or null
  loadingNotifications: false,
  unread: 0,
  realtime: null,
  thread: null, // the user whose conversation is open
  mode: "signin",
  watched: new Set(), // user ids whose presence room is joined
  online: new Set(), // user ids shown online
  presenceToAsk: new Set(), // joined (again) and not yet asked
  presenceTimer: null,
};

// ---------- small helpers ----------

function toast(message, kind = "info") {
  const el = h("div", { class: `toast ${kind === "error" ? "error" : ""}`, role: kind === "error" ? "alert" : "status" }, message);
  $("toasts").append(el);
  setTimeout(() => el.remove(), 4000);
}

function reportError(err) {
  if (err instanceof ApiError && err.status === 401 && state.token) {
    signOut("Your session ended. Please sign in again.");
    return;
  }
  toast(err instanceof ApiError ? err.message : "Something went wrong.", "error");
}

function call(method, path, body) {
  return api(method, path, { token: state.token, body });
}

function userName(id) {
  const u = state.users.get(id);
  return u ? u.name : `user ${id}`;
}

async function ensureUsers(ids) {
  const missing = [...new Set(ids)].filter((id) => id != null && !state.users.has(id));
  await Promise.all(
    missing.map((id) =>
      call("GET", `/api/users/${id}`)
        .then((u) => state.users.set(u.id, u))
        .catch(() => {}),
    ),
  );
}

function timeEl(iso) {
  return h("time", { datetime: iso, title: new Date(iso).toLocaleString(), dataset: { ago: iso } }, timeAgo(iso));
}

function setCount(el, value) {
  const text = String(value);
  if (el.textContent === text) return;
  el.textContent = text;
  el.classList.remove("bump");
  void el.offsetWidth; // restart the animation
  el.classList.add("bump");
}

// ---------- sign in / sign up ----------

function showAuth() {
  $("auth-view").hidden = false;
  $("app-view").hidden = true;
  $("signed-in-tools").hidden = true;
  $("user-chip").hidden = true;
  $("status").hidden = true;
  const demo = document.querySelector('meta[name="likewise-demo-users"]').content.trim();
  const chips = $("demo-chips");
  chips.replaceChildren();
  if (demo) {
    for (const pair of demo.split(",")) {
      const [name, password] = pair.split(":");
      chips.append(
        h("button", {
          class: "chip",
          type: "button",
          "aria-label": `Fill in the demo account ${name}`,
          onclick: () => {
            setMode("signin");
            $("auth-name").value = name;
            $("auth-password").value = password;
            $("auth-submit").focus();
          },
        }, avatar({ name }, true), name),
      );
    }
  }
  $("demo-users").hidden = !demo;
  $("auth-name").focus();
}

function setMode(mode) {
  state.mode = mode;
  const signup = mode === "signup";
  $("tab-signin").setAttribute("aria-selected", String(!signup));
  $("tab-signup").setAttribute("aria-selected", String(signup));
  $("auth-submit").textContent = signup ? "Create account" : "Sign in";
  $("auth-password").autocomplete = signup ? "new-password" : "current-password";
  $("password-hint").hidden = !signup;
  $("auth-error").textContent = "";
}

async function submitAuth(event) {
  event.preventDefault();
  const name = $("auth-name").value.trim();
  const password = $("auth-password").value;
  if (!name || !password) {
    $("auth-error").textContent = "Enter a name and a password.";
    return;
  }
  $("auth-submit").disabled = true;
  $("auth-error").textContent = "";
  try {
    const path = state.mode === "signup" ? "/api/users" : "/api/sessions";
    const session = await api("POST", path, { body: { name, password } });
    localStorage.setItem(TOKEN_KEY, session.token);
    state.token = session.token;
    $("auth-password").value = "";
    await startApp(session.user);
  } catch (err) {
    $("auth-error").textContent = err instanceof ApiError ? err.message : "Something went wrong.";
  } finally {
    $("auth-submit").disabled = false;
  }
}

/**
 * Leaves the app. Signing out by choice also ends the session on the server, so a
 * copy of the token stops working; after a 401 there is nothing left to end.
 */
function signOut(message) {
  if (state.realtime) state.realtime.stop();
  if (state.token && !message) {
    api("DELETE", "/api/sessions", { token: state.token }).catch(() => {});
  }
  localStorage.removeItem(TOKEN_KEY);
  Object.assign(state, {
    token: null, me: null, realtime: null, thread: null, nextBefore: null,
    notifications: [], notificationsBefore: null, unread: 0,
  });
  state.users.clear();
  state.posts.clear();
  state.watched.clear();
  state.online.clear();
  state.presenceToAsk.clear();
  clearTimeout(state.presenceTimer);
  $("presence-toggle").hidden = true;
  $("feed").replaceChildren();
  $("notif-list").replaceChildren();
  closePanel();
  showAuth();
  if (message) $("auth-error").textContent = message;
}

// ---------- the signed-in app ----------

async function startApp(me) {
  state.me = me;
  state.users.set(me.id, me);
  $("auth-view").hidden = true;
  $("app-view").hidden = false;
  $("signed-in-tools").hidden = false;
  $("user-chip").hidden = false;
  $("status").hidden = false;
  $("me-name").textContent = me.name;
  const meAvatar = avatar(me, true);
  meAvatar.id = "me-avatar";
  $("me-avatar").replaceWith(meAvatar);

  const people = await call("GET", "/api/users?limit=100");
  for (const u of people.users) state.users.set(u.id, u);
  renderPeople();

  const list = await call("GET", `/api/notifications?limit=${NOTIFICATION_PAGE}`);
  state.notifications = list.notifications;
  state.notificationsBefore = list.next_before;
  state.unread = list.unread_count;
  renderNotifications();

  state.realtime = new Realtime({
    token: state.token,
    lastNotificationId: 0,
    onState: setStatus,
    onNotification: receiveNotification,
    onEvent: receiveEvent,
    onUnauthorized: () => signOut("Your session ended. Please sign in again."),
  });
  state.realtime.markSeen(list.notifications);
  // Joined before the first page is read: a post committed in between arrives live,
  // or is found when the join is confirmed (see catchUpFeed).
  state.realtime.subscribe("feed");
  await loadFeed();
  watchPresence([...state.users.keys()]);
  state.realtime.start();
  loadPresenceChoice();
}

function setStatus(s) {
  const el = $("status");
  el.dataset.state = s;
  el.querySelector(".label").textContent =
    s === "live" ? "Live" : s === "connecting" ? "Connecting…" : "Offline, reconnecting…";
}

// ---------- feed ----------

async function loadFeed() {
  const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
  if (state.nextBefore) query.set("before", String(state.nextBefore));
  const page = await call("GET", `/api/posts?${query}`);
  await ensureUsers(page.posts.map((p) => p.author_id));
  for (const post of page.posts) $("feed").append(renderPost(post).el);
  state.nextBefore = page.next_before;
  $("feed-more-wrap").hidden = !page.next_before;
  if (state.posts.size === 0) {
    $("feed").append(h("p", { class: "card empty", id: "feed-empty" }, "No posts yet. Write the first one above."));
  }
}

function renderPost(post) {
  const entry = { post, liked: !!post.liked, collected: !!post.collected, commentsOpen: false };
  const author = state.users.get(post.author_id) || { id: post.author_id, name: userName(post.author_id) };

  entry.likeCount = h("span", { class: "count" }, post.likes_count);
  entry.collectCount = h("span", { class: "count" }, post.collects_count);
  entry.shareCount = h("span", { class: "count" }, post.shares_count);
  entry.commentCount = h("span", { class: "count" }, post.comments_count);
  entry.viewCount = h("span", { class: "count" }, post.view_count);

  entry.likeBtn = h("button", {
    type: "button", class: "action like", "aria-pressed": String(entry.liked),
    "aria-label": "Like", onclick: () => toggleLike(entry),
  }, icon(ICONS.heart), entry.likeCount);
  entry.collectBtn = h("button", {
    type: "button", class: "action collect", "aria-pressed": String(entry.collected),
    "aria-label": "Collect", onclick: () => toggleCollect(entry),
  }, icon(ICONS.bookmark), entry.collectCount);
  const shareBtn = h("button", {
    type: "button", class: "action share", "aria-label": "Share", onclick: () => share(entry),
  }, icon(ICONS.share), entry.shareCount);
  entry.commentsBtn = h("button", {
    type: "button", class: "action comments-toggle", "aria-expanded": "false",
    "aria-controls": `comments-${post.id}`, "aria-label": "Comments",
    onclick: () => toggleComments(entry),
  }, icon(ICONS.comment), entry.commentCount);
  entry.commentsEl = h("div", { class: "comments", id: `comments-${post.id}`, hidden: true });

  const messageAuthor = post.author_id === state.me.id ? null
    : h("button", { type: "button", class: "link", onclick: () => openThread(author) }, "Message");

  entry.el = h("article", { class: "card post", dataset: { postId: post.id }, "aria-labelledby": `post-title-${post.id}` },
    h("div", { class: "post-head" }, avatarWithDot(author),
      h("div", {}, h("div", { class: "who" }, author.name),
        h("span", { class: "hint" }, timeEl(post.created_at), " · ", entry.viewCount, " views")),
      h("span", { class: "spacer" }), messageAuthor),
    h("h3", { id: `post-title-${post.id}` }, post.title),
    h("p", { class: "body" }, post.body),
    h("div", { class: "actions" }, entry.likeBtn, entry.collectBtn, shareBtn, entry.commentsBtn),
    entry.commentsEl,
  );
  state.posts.set(post.id, entry);
  if (state.realtime) state.realtime.subscribe(`post:${post.id}`);
  watchPresence([post.author_id]);
  return entry;
}

/** Puts a post that arrived live (or was found missing) in its place, newest first. */
function insertPost(post) {
  if (state.posts.has(post.id)) return;
  const empty = $("feed-empty");
  if (empty) empty.remove();
  const el = renderPost(post).el;
  // Posts are shown newest (highest id) first.
  const later = [...$("feed").children].find((c) => Number(c.dataset.postId) < post.id);
  if (later) later.before(el);
  else $("feed").append(el);
}

/** A new post from the `feed` room. */
async function receivePost(post) {
  if (!state.me || state.posts.has(post.id)) return;
  await ensureUsers([post.author_id]);
  if (!state.me || state.posts.has(post.id)) return;
  insertPost(post);
  if (post.author_id !== state.me.id) {
    $("unread-live").textContent = `New post by ${userName(post.author_id)}: ${post.title}`;
  }
}

/**
 * Once the `feed` room is joined (again, after a reconnect), the newest posts are
 * read and those not shown yet are added: posts made while the page was loading or
 * offline are not missed.
 */
async function catchUpFeed() {
  if (!state.me) return;
  const token = state.token;
  try {
    const page = await call("GET", `/api/posts?limit=${PAGE_SIZE}`);
    if (state.token !== token) return;
    const fresh = page.posts.filter((p) => !state.posts.has(p.id));
    await ensureUsers(fresh.map((p) => p.author_id));
    if (state.token !== token) return;
    for (const post of fresh.reverse()) insertPost(post);
  } catch (err) {
    reportError(err);
  }
}

function applyPost(post) {
  const entry = state.posts.get(post.id);
  if (!entry) return;
  entry.post = post;
  setCount(entry.likeCount, post.likes_count);
  setCount(entry.collectCount, post.collects_count);
  setCount(entry.shareCount, post.shares_count);
  setCount(entry.commentCount, post.comments_count);
  entry.viewCount.textContent = String(post.view_count);
}

async function toggleLike(entry) {
  const liking = !entry.liked;
  entry.liked = liking;
  entry.likeBtn.setAttribute("aria-pressed", String(liking));
  setCount(entry.likeCount, Math.max(0, Number(entry.likeCount.textContent) + (liking ? 1 : -1)));
  try {
    await call(liking ? "PUT" : "DELETE", `/api/posts/${entry.post.id}/like`);
  } catch (err) {
    entry.liked = !liking;
    entry.likeBtn.setAttribute("aria-pressed", String(!liking));
    setCount(entry.likeCount, entry.post.likes_count);
    reportError(err);
  }
}

async function toggleCollect(entry) {
  const collecting = !entry.collected;
  entry.collected = collecting;
  entry.collectBtn.setAttribute("aria-pressed", String(collecting));
  setCount(entry.collectCount, Math.max(0, Number(entry.collectCount.textContent) + (collecting ? 1 : -1)));
  try {
    await call(collecting ? "PUT" : "DELETE", `/api/posts/${entry.post.id}/collect`);
    toast(collecting ? "Saved to your collection." : "Removed from your collection.");
  } catch (err) {
    entry.collected = !collecting;
    entry.collectBtn.setAttribute("aria-pressed", String(!collecting));
    setCount(entry.collectCount, entry.post.collects_count);
    reportError(err);
  }
}

async function share(entry) {
  try {
    await call("POST", `/api/posts/${entry.post.id}/shares`);
    setCount(entry.shareCount, Number(entry.shareCount.textContent) + 1);
    toast("Shared.");
  } catch (err) {
    reportError(err);
  }
}

async function createPost(event) {
  event.preventDefault();
  const title = $("post-title").value.trim();
  const body = $("post-body").value.trim();
  if (!title || !body) {
    $("post-error").textContent = "A post needs a title and some text.";
    return;
  }
  $("post-error").textContent = "";
  try {
    const post = await call("POST", "/api/posts", { title, body });
    $("post-title").value = "";
    $("post-body").value = "";
    insertPost(post);
  } catch (err) {
    if (err instanceof ApiError && err.status !== 401) $("post-error").textContent = err.message;
    else reportError(err);
  }
}

// ---------- comments ----------

async function toggleComments(entry) {
  entry.commentsOpen = !entry.commentsOpen;
  entry.commentsBtn.setAttribute("aria-expanded", String(entry.commentsOpen));
  entry.commentsEl.hidden = !entry.commentsOpen;
  if (entry.commentsOpen) await loadComments(entry);
}

async function loadComments(entry) {
  try {
    const { comments } = await call("GET", `/api/posts/${entry.post.id}/comments`);
    await ensureUsers(comments.map((c) => c.author_id));
    renderComments(entry, comments);
  } catch (err) {
    reportError(err);
  }
}

function renderComments(entry, comments) {
  const byId = new Map(comments.map((c) => [c.id, c]));
  const rootOf = (c) => {
    let cur = c;
    for (let i = 0; i < 32 && cur.parent_id && byId.has(cur.parent_id); i++) cur = byId.get(cur.parent_id);
    return cur.id;
  };
  const replies = new Map();
  const roots = [];
  for (const c of comments) {
    if (c.parent_id && byId.has(c.parent_id)) {
      const root = rootOf(c);
      if (!replies.has(root)) replies.set(root, []);
      replies.get(root).push(c);
    } else {
      roots.push(c);
    }
  }
  entry.commentEls = new Map();
  const list = h("div", { class: "comment-list" });
  for (const c of roots) {
    list.append(renderComment(entry, c));
    const rs = replies.get(c.id);
    if (rs) list.append(h("div", { class: "replies" }, rs.map((r) => renderComment(entry, r))));
  }
  if (comments.length === 0) list.append(h("p", { class: "hint" }, "No comments yet."));
  const input = h("input", { id: `comment-input-${entry.post.id}`, name: "body", placeholder: "Write a comment", required: true, autocomplete: "off" });
  const form = h("form", { class: "inline-form", onsubmit: (e) => addComment(e, entry, input, null) },
    h("label", { for: input.id, class: "visually-hidden" }, "Comment"), input,
    h("button", { class: "primary", type: "submit" }, "Comment"));
  entry.commentsEl.replaceChildren(list, form);
}

function renderComment(entry, c) {
  const author = state.users.get(c.author_id) || { id: c.author_id, name: userName(c.author_id) };
  const likeCount = h("span", { class: "count" }, c.likes_count);
  let liked = !!c.liked;
  const likeBtn = h("button", {
    type: "button", class: "link", "aria-pressed": String(liked), "aria-label": `Like comment by ${author.name}`,
    onclick: async () => {
      liked = !liked;
      likeBtn.setAttribute("aria-pressed", String(liked));
      setCount(likeCount, Math.max(0, Number(likeCount.textContent) + (liked ? 1 : -1)));
      try {
        await call(liked ? "PUT" : "DELETE", `/api/comments/${c.id}/like`);
      } catch (err) {
        liked = !liked;
        likeBtn.setAttribute("aria-pressed", String(liked));
        reportError(err);
      }
    },
  }, "Like · ", likeCount);
  const bubble = h("div", { class: "bubble" },
    h("p", { class: "meta" }, h("strong", {}, author.name), " · ", timeEl(c.created_at)),
    h("p", { class: "text" }, c.body));
  const tools = h("div", { class: "tools" }, likeBtn,
    h("button", { type: "button", class: "link", onclick: () => openReply(entry, c, bubble) }, "Reply"));
  bubble.append(tools);
  entry.commentEls.set(c.id, { likeCount });
  return h("div", { class: "comment", dataset: { commentId: c.id } }, avatar(author, true), bubble);
}

function openReply(entry, parent, bubble) {
  const existing = bubble.querySelector("form");
  if (existing) {
    existing.querySelector("input").focus();
    return;
  }
  const input = h("input", { id: `reply-${parent.id}`, placeholder: `Reply to ${userName(parent.author_id)}`, required: true, autocomplete: "off" });
  const form = h("form", { class: "inline-form", onsubmit: (e) => addComment(e, entry, input, parent.id) },
    h("label", { for: input.id, class: "visually-hidden" }, `Reply to ${userName(parent.author_id)}`), input,
    h("button", { class: "primary", type: "submit" }, "Reply"));
  bubble.append(form);
  input.focus();
}

async function addComment(event, entry, input, parentId) {
  event.preventDefault();
  const body = input.value.trim();
  if (!body) return;
  try {
    await call("POST", `/api/posts/${entry.post.id}/comments`, parentId ? { body, parent_id: parentId } : { body });
    input.value = "";
    await loadComments(entry);
    $(`comment-input-${entry.post.id}`)?.focus();
  } catch (err) {
    reportError(err);
  }
}

function applyComment(comment) {
  const entry = state.posts.get(comment.post_id);
  const el = entry && entry.commentEls && entry.commentEls.get(comment.id);
  if (el) setCount(el.likeCount, comment.likes_count);
}

// ---------- realtime events ----------

function receiveEvent(name, data) {
  if (name === "post_updated" && data) applyPost(data);
  else if (name === "comment_updated" && data) applyComment(data);
  else if (name === "new_post" && data) receivePost(data);
  else if (name === "presence" && data) setOnline(data.user_id, data.online);
  else if (name === "subscribed" && data) joined(data.room);
}

function joined(room) {
  if (room === "feed") {
    catchUpFeed();
    return;
  }
  const m = /^presence:(\d+)$/.exec(room || "");
  if (m) {
    // Joined first, asked second: a change after the answer arrives as an event.
    state.presenceToAsk.add(Number(m[1]));
    clearTimeout(state.presenceTimer);
    state.presenceTimer = setTimeout(askPresence, 30);
  }
}

// ---------- presence ----------

/** An avatar with the dot that says whether its user is online. */
function avatarWithDot(user, small = false) {
  const dot = h("span", {
    class: "presence-dot", role: "img", "aria-label": `${user.name} is online`, title: "Online",
    dataset: { presenceUser: user.id }, hidden: !state.online.has(user.id),
  });
  return h("span", { class: "avatar-wrap" }, avatar(user, small), dot);
}

/** Follows the presence of these users (up to MAX_WATCHED in all). */
function watchPresence(ids) {
  if (!state.realtime) return;
  for (const id of ids) {
    if (id == null || state.watched.has(id) || state.watched.size >= MAX_WATCHED) continue;
    state.watched.add(id);
    state.realtime.subscribe(`presence:${id}`);
  }
}

async function askPresence() {
  const ids = [...state.presenceToAsk];
  state.presenceToAsk.clear();
  const token = state.token;
  for (let i = 0; i < ids.length; i += PRESENCE_BATCH) {
    const batch = ids.slice(i, i + PRESENCE_BATCH);
    try {
      const { online } = await call("GET", `/api/presence?user_ids=${batch.join(",")}`);
      if (state.token !== token) return;
      const now = new Set(online);
      for (const id of batch) setOnline(id, now.has(id));
    } catch (err) {
      reportError(err);
      return;
    }
  }
}

function setOnline(id, online) {
  if (online) state.online.add(id);
  else state.online.delete(id);
  for (const dot of document.querySelectorAll(`.presence-dot[data-presence-user="${id}"]`)) dot.hidden = !online;
}

/** The "Show me online" switch reflects the stored choice. */
async function loadPresenceChoice() {
  try {
    const { visible } = await call("GET", "/api/me/presence");
    $("show-online").checked = visible;
    $("presence-toggle").hidden = false;
  } catch (err) {
    reportError(err);
  }
}

async function changePresenceChoice() {
  const box = $("show-online");
  const visible = box.checked;
  box.disabled = true;
  try {
    const answer = await call("PUT", "/api/me/presence", { visible });
    box.checked = answer.visible;
    toast(answer.visible ? "Others can see when you are online." : "You appear offline to others.");
  } catch (err) {
    box.checked = !visible;
    reportError(err);
  } finally {
    box.disabled = false;
  }
}

async function receiveNotification(n) {
  if (state.notifications.some((x) => x.id === n.id)) return;
  if (n.actor_id != null && !state.users.has(n.actor_id)) {
    await ensureUsers([n.actor_id]);
    renderPeople();
    watchPresence([n.actor_id]);
  }
  state.notifications.unshift(n);
  state.notifications.sort((a, b) => b.id - a.id);
  if (!n.read) state.unread += 1;
  renderNotifications();
  $("unread-live").textContent = `New notification: ${n.text}`;
  if (n.kind === "message" && state.thread && state.thread.id === n.actor_id) loadThread();
  if ((n.kind === "comment" || n.kind === "reply") && n.post_id) {
    const entry = state.posts.get(n.post_id);
    if (entry && entry.commentsOpen) loadComments(entry);
  }
}

// ---------- notifications ----------

const KIND_ICON = {
  like_post: ICONS.heart, like_comment: ICONS.heart, collect: ICONS.bookmark,
  comment: ICONS.comment, reply: ICONS.comment, message: ICONS.mail, custom: ICONS.bell,
};

function renderBadge() {
  const badge = $("badge");
  badge.hidden = state.unread === 0;
  badge.textContent = state.unread > 99 ? "99+" : String(state.unread);
  $("bell").setAttribute("aria-label", state.unread === 0 ? "Notifications" : `Notifications, ${state.unread} unread`);
  $("mark-all").disabled = state.unread === 0;
}

function renderNotifications() {
  renderBadge();
  const list = $("notif-list");
  // Re-rendering (a new notification, a mark-read) must not jump the reader back
  // to the top of a list they scrolled down.
  const scrollTop = list.scrollTop;
  list.replaceChildren();
  if (state.notifications.length === 0) {
    list.append(h("li", { class: "empty" }, "You are all caught up."));
    return;
  }
  for (const n of state.notifications) {
    const mark = n.read ? null : h("button", {
      type: "button", class: "link", "aria-label": `Mark as read: ${n.text}`,
      onclick: (e) => { e.stopPropagation(); markRead([n.id]); },
    }, "Mark read");
    list.append(h("li", { class: `notif kind-${n.kind} ${n.read ? "" : "unread"}`, dataset: { notificationId: n.id } },
      h("span", { class: "kind-icon" }, icon(KIND_ICON[n.kind] || ICONS.bell)),
      h("div", { class: "what" }, h("p", {}, n.text), timeEl(n.created_at)),
      mark,
      h("span", { class: "dot", "aria-hidden": "true" })));
  }
  if (state.notificationsBefore != null) {
    list.append(h("li", { class: "more" }, h("button", {
      type: "button", class: "link", disabled: state.loadingNotifications,
      onclick: (e) => { e.stopPropagation(); loadOlderNotifications(); },
    }, state.loadingNotifications ? "Loading…" : "Show older notifications")));
  }
  list.scrollTop = scrollTop;
}

/**
 * The bell lists the newest page first; the rest follows page by page, when the
 * list is scrolled to its end or "Show older notifications" is pressed, so the
 * oldest notification can always be reached.
 */
async function loadOlderNotifications() {
  if (state.notificationsBefore == null || state.loadingNotifications) return;
  state.loadingNotifications = true;
  const token = state.token;
  renderNotifications();
  try {
    const page = await call("GET", `/api/notifications?limit=${NOTIFICATION_PAGE}&before=${state.notificationsBefore}`);
    if (state.token !== token) return; // signed out meanwhile
    const known = new Set(state.notifications.map((n) => n.id));
    state.notifications.push(...page.notifications.filter((n) => !known.has(n.id)));
    state.notifications.sort((a, b) => b.id - a.id);
    state.notificationsBefore = page.next_before;
    if (state.realtime) state.realtime.markSeen(page.notifications);
  } catch (err) {
    reportError(err);
  } finally {
    state.loadingNotifications = false;
    if (state.token === token) renderNotifications();
  }
}

function notificationsScrolled() {
  const list = $("notif-list");
  if (list.scrollTop + list.clientHeight >= list.scrollHeight - 80) loadOlderNotifications();
}

async function markRead(ids) {
  try {
    const answer = await call("POST", "/api/notifications/read", ids ? { ids } : { all: true });
    for (const n of state.notifications) if (!ids || ids.includes(n.id)) n.read = true;
    state.unread = answer.unread_count;
    renderNotifications();
    $("unread-live").textContent = state.unread === 0 ? "All notifications read." : `${state.unread} unread notifications.`;
  } catch (err) {
    reportError(err);
  }
}

function openPanel() {
  $("notif-panel").hidden = false;
  $("bell").setAttribute("aria-expanded", "true");
}

function closePanel() {
  $("notif-panel").hidden = true;
  $("bell").setAttribute("aria-expanded", "false");
}

// ---------- messages ----------

function renderPeople() {
  const list = $("people");
  list.replaceChildren();
  const others = [...state.users.values()].filter((u) => state.me && u.id !== state.me.id).sort((a, b) => a.name.localeCompare(b.name));
  if (others.length === 0) {
    list.append(h("li", { class: "hint" }, "Nobody else is here yet. Open this page in another browser and create a second account."));
    return;
  }
  for (const u of others) {
    list.append(h("li", {}, h("button", {
      type: "button", "aria-current": String(state.thread && state.thread.id === u.id),
      onclick: () => openThread(u),
    }, avatarWithDot(u, true), h("span", {}, u.name))));
  }
}

async function openThread(user) {
  state.thread = user;
  $("people-view").hidden = true;
  $("thread-view").hidden = false;
  $("thread-name").textContent = user.name;
  const a = avatar(user, true);
  a.id = "thread-avatar";
  $("thread-avatar").replaceWith(a);
  await loadThread();
  $("message-body").focus();
}

function closeThread() {
  state.thread = null;
  $("thread-view").hidden = true;
  $("people-view").hidden = false;
  renderPeople();
}

async function loadThread() {
  const user = state.thread;
  if (!user) return;
  try {
    const { messages } = await call("GET", `/api/messages?with=${user.id}&limit=50`);
    if (state.thread !== user) return;
    const list = $("thread");
    list.replaceChildren();
    if (messages.length === 0) list.append(h("li", { class: "hint" }, `Say hello to ${user.name}.`));
    for (const m of messages.reverse()) {
      list.append(h("li", { class: `msg ${m.from_user_id === state.me.id ? "mine" : ""}` }, m.body, timeEl(m.created_at)));
    }
    list.scrollTop = list.scrollHeight;
  } catch (err) {
    reportError(err);
  }
}

async function sendMessage(event) {
  event.preventDefault();
  const body = $("message-body").value.trim();
  if (!body || !state.thread) return;
  try {
    await call("POST", "/api/messages", { to_user_id: state.thread.id, body });
    $("message-body").value = "";
    await loadThread();
  } catch (err) {
    reportError(err);
  }
}

// ---------- wiring ----------

function wire() {
  $("tab-signin").addEventListener("click", () => setMode("signin"));
  $("tab-signup").addEventListener("click", () => setMode("signup"));
  $("auth-form").addEventListener("submit", submitAuth);
  $("sign-out").addEventListener("click", () => signOut());
  $("post-form").addEventListener("submit", createPost);
  $("feed-more").addEventListener("click", () => loadFeed().catch(reportError));
  $("message-form").addEventListener("submit", sendMessage);
  $("thread-back").addEventListener("click", closeThread);
  $("mark-all").addEventListener("click", () => markRead(null));
  $("show-online").addEventListener("change", changePresenceChoice);
  $("notif-list").addEventListener("scroll", notificationsScrolled, { passive: true });
  $("bell").addEventListener("click", () => ($("notif-panel").hidden ? openPanel() : closePanel()));
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && !$("notif-panel").hidden) {
      closePanel();
      $("bell").focus();
    }
  });
  document.addEventListener("click", (e) => {
    if (!$("notif-panel").hidden && !e.target.closest(".menu-anchor")) closePanel();
  });
  setInterval(() => {
    for (const t of document.querySelectorAll("time[data-ago]")) t.textContent = timeAgo(t.dataset.ago);
  }, 30000);
}

async function boot() {
  wire();
  state.token = localStorage.getItem(TOKEN_KEY);
  if (!state.token) {
    showAuth();
    return;
  }
  try {
    const me = await call("GET", "/api/me");
    await startApp(me);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) signOut();
    else {
      showAuth();
      reportError(err);
    }
  }
}

boot();
