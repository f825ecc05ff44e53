/**
 * roomcast.js — the browser client for roomcast (wire protocol v1). One dependency-free
 * ES module: `import { RoomcastClient } from "/roomcast.js"`.
 *
 * It keeps one WebSocket alive: reconnects with exponential backoff and full jitter,
 * obeys the server's close codes (some mean "never come back"), resubscribes with `since`
 * so nothing still in history is lost, follows a room's stream across epochs (a `reset`
 * frame becomes a `reset` event: reload), retries publishes with their idempotency key,
 * refreshes the token before it expires and pings to notice a dead link.
 * See docs/clients.md.
 */

export const CONNECTING = "connecting";
export const CONNECTED = "connected";
export const RECONNECTING = "reconnecting";
export const DISCONNECTED = "disconnected";

/** Close codes after which the client does not reconnect (4401 only without a new token). */
export const STOP_CODES = Object.freeze([1000, 1009, 4400, 4401, 4403]);

/** The client's own close code for a link that stopped answering (never sent by servers). */
export const DEAD_LINK = 4008;

const DEFAULTS = Object.freeze({
  initialDelay: 500, // ms before the first reconnect attempt (upper bound, see jitter)
  factor: 1.5, // each further attempt waits up to factor times longer ...
  maxDelay: 30000, // ... but never longer than this
  jitter: 1, // 1 = full jitter: wait random(0, delay]; 0 = exactly delay
  longDelay: 5000, // initial delay after 4429 (too many connections), same factor and cap
  connectTimeout: 10000, // socket open + `connected` frame
  requestTimeout: 10000, // subscribe, history, presence, ping, refresh, unsubscribe
  publishTimeout: 60000, // a publish, across reconnects
  pingInterval: 20000, // app-level ping while connected; 0 turns it off
  pingTimeout: 10000, // no frame at all within this after a ping: the link is dead
  refreshBefore: 30000, // refresh the token this long before `exp` (at most 1/4 of its life)
  WebSocket: undefined, // the WebSocket class (defaults to the global one)
  random: Math.random,
});

/** An error reply, a time-out or a lost connection; `code` says which. */
export class RoomcastError extends Error {
  constructor(code, message, frame = null) {
    super(message);
    this.name = "RoomcastError";
    this.code = code;
    this.frame = frame;
  }
}

/** How long to wait before reconnect attempt `attempt` (0-based), in ms. */
export function backoffDelay(attempt, options = {}, random = Math.random) {
  const o = { ...DEFAULTS, ...options };
  const ceiling = Math.min(o.maxDelay, o.initialDelay * Math.pow(o.factor, attempt));
  return ceiling * (1 - o.jitter * random());
}

/** The `exp` claim of a JWT (seconds), or null; the signature is not checked here. */
export function tokenExpiry(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const padded = part + "=".repeat((4 - (part.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    const exp = JSON.parse(new TextDecoder().decode(bytes)).exp;
    return typeof exp === "number" ? exp : null;
  } catch {
    return null;
  }
}

function newKey() {
  if (globalThis.crypto && typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes); // works outside secure contexts too
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function withToken(url, token) {
  let absolute = url;
  if (url.startsWith("/") && typeof location !== "undefined") {
    absolute = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${url}`;
  }
  const u = new URL(absolute);
  u.searchParams.set("token", token);
  return u.toString();
}

/**
 * One logical connection to a roomcast server that survives reconnects.
 *
 *   const client = new RoomcastClient("ws://127.0.0.1:8000/ws", { token: () => fetchToken() });
 *   client.on("message", (m) => console.log(m.room, m.offset, m.data));
 *   client.connect();
 *   await client.subscribe("project:12");
 *
 * Events (EventTarget; `on(type, fn)` passes the detail and returns an `off` function):
 * state, connected, disconnected, message, joined, left, direct, subscribed, recovery,
 * reset, refreshed, error, frame.
 */
export class RoomcastClient extends EventTarget {
  constructor(url, options = {}) {
    super();
    if (typeof url !== "string" || !url) throw new TypeError("RoomcastClient needs the server's WebSocket URL, e.g. ws://127.0.0.1:8000/ws");
    // token: null connects without one: the server's connect hook admits by the page's own
    // session cookie (§11), which the browser sends with the handshake.
    if (!options.token && options.token !== null) throw new TypeError("RoomcastClient needs a token: a string, or a function returning one (or a promise of one); or null to log in with the page's session cookie through the server's connect hook");
    this.url = url;
    this.options = { ...DEFAULTS, ...options };
    this.state = DISCONNECTED;
    this.token = null; // the token the live (or last) connection used
    this.connection = null; // the server's `connected` frame while connected
    this.subscriptions = new Map(); // room -> {events, where, presence}
    // room -> {offset, epoch}: the last message seen. Messages carry no epoch: theirs is
    // the last one the server named for the room (`subscribed`, or `reset` before the
    // first message of a new stream), so offsets are compared within that epoch only.
    this.positions = new Map();
    this._ws = null;
    this._generation = 0; // bumped whenever a socket or a pending step becomes stale
    this._attempt = 0;
    this._nextId = 1;
    this._calls = new Map(); // id -> {resolve, reject, timer} (this connection only)
    this._subscribeIds = new Map(); // id -> {rooms, since} of subscribe commands in flight
    this._publishes = new Map(); // idempotency key -> pending publish (kept across reconnects)
    this._publishIds = new Map(); // id -> pending publish (this connection only)
    this._waiters = new Map(); // room -> [{resolve, reject}] waiting for a `subscribed` entry
    this._stateWaiters = [];
    this._replayUntil = new Map(); // room -> offset: messages up to it are recovery replays
    this._nextToken = null;
    this._skew = 0; // server clock minus ours, ms
    this._lastFrameAt = 0;
    this._timers = { reconnect: null, connect: null, ping: null, pingDeadline: null, refresh: null };
    this._onOnline = () => {
      if (this.state === RECONNECTING && this._timers.reconnect !== null) {
        clearTimeout(this._timers.reconnect);
        this._timers.reconnect = null;
        this._open();
      }
    };
  }

  // ------------------------------------------------------------------ events
  /** Listen to an event with a function of its detail; returns a function that stops it. */
  on(type, fn) {
    const listener = (event) => fn(event.detail);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _setState(state, detail = {}) {
    if (state === this.state) return;
    const previous = this.state;
    this.state = state;
    for (const w of this._stateWaiters.splice(0)) w(state);
    this._emit("state", { state, previous, ...detail });
  }

  // ------------------------------------------------------------------ lifecycle
  /** Start connecting (and keep reconnecting until close() or a stop code). */
  connect() {
    if (this.state !== DISCONNECTED) return;
    this._attempt = 0;
    if (typeof window !== "undefined") window.addEventListener("online", this._onOnline);
    this._setState(CONNECTING);
    this._open();
  }

  /** Close for good: no reconnect; pending requests and publishes fail. */
  close(reason = "closed by the client") {
    this._generation++;
    const ws = this._ws;
    this._forgetSocket();
    if (ws) {
      try {
        ws.close(1000, reason);
      } catch {
        /* already closing */
      }
    }
    this._stop(1000, reason);
  }

  async _token() {
    if (this._nextToken !== null) {
      const token = this._nextToken;
      this._nextToken = null;
      return token;
    }
    const source = this.options.token;
    if (source === null) return ""; // cookie login: no token at all
    const token = typeof source === "function" ? await source() : source;
    if (typeof token !== "string" || !token) throw new TypeError("the token function returned no token (it must return a non-empty string)");
    return token;
  }

  async _open() {
    const generation = ++this._generation;
    let token;
    try {
      token = await this._token();
    } catch (error) {
      if (generation !== this._generation) return;
      this._emit("error", { code: "token", message: `could not get a token: ${error.message}`, error });
      this._reconnectAfter(1006, "no token");
      return;
    }
    if (generation !== this._generation) return;
    this.token = token;
    const WS = this.options.WebSocket || globalThis.WebSocket;
    let ws;
    try {
      ws = new WS(token ? withToken(this.url, token) : this.url);
    } catch (error) {
      this._emit("error", { code: "url", message: `cannot open ${this.url}: ${error.message}`, error });
      this._stop(1006, error.message);
      return;
    }
    this._ws = ws;
    ws.onmessage = (event) => {
      if (ws === this._ws) this._onFrame(event.data);
    };
    ws.onclose = (event) => {
      if (ws === this._ws) this._onClose(event.code, event.reason);
    };
    ws.onerror = () => {}; // a close event always follows
    this._timers.connect = setTimeout(() => this._drop(ws, DEAD_LINK, "connect timed out"), this.options.connectTimeout);
  }

  /** Abandon a socket without waiting for its closing handshake (a dead link). */
  _drop(ws, code, reason) {
    if (ws !== this._ws) return;
    this._forgetSocket();
    try {
      ws.close(); // best effort; its events are no longer ours
    } catch {
      /* ignore */
    }
    this._onClose(code, reason, true);
  }

  _forgetSocket() {
    const ws = this._ws;
    if (ws) ws.onmessage = ws.onclose = ws.onerror = null;
    this._ws = null;
    for (const name of ["connect", "ping", "pingDeadline", "refresh"]) {
      clearTimeout(this._timers[name]);
      clearInterval(this._timers[name]);
      this._timers[name] = null;
    }
  }

  async _onClose(code, reason, dropped = false) {
    if (!dropped) this._forgetSocket();
    this.connection = null;
    this._failCalls(new RoomcastError("connection_lost", `the connection closed (${code}) before the reply came`));
    this._publishIds.clear(); // their publishes stay in _publishes and are sent again
    this._subscribeIds.clear(); // their rooms stay subscribed and are sent again
    this._replayUntil.clear();
    const generation = ++this._generation;
    if (code === 4401) {
      // Unauthorized: come back only when the token function has a different token.
      let fresh = null;
      try {
        fresh = typeof this.options.token === "function" ? await this._token() : null;
      } catch (error) {
        this._emit("error", { code: "token", message: `could not get a new token: ${error.message}`, error });
      }
      if (generation !== this._generation) return;
      if (fresh && fresh !== this.token) {
        this._nextToken = fresh;
        this._reconnectAfter(code, reason);
      } else {
        this._stop(code, reason);
      }
      return;
    }
    if (STOP_CODES.includes(code)) this._stop(code, reason);
    else this._reconnectAfter(code, reason);
  }

  _failCalls(error) {
    for (const call of this._calls.values()) {
      clearTimeout(call.timer);
      call.reject(error);
    }
    this._calls.clear();
  }

  _reconnectAfter(code, reason) {
    const o = this.options;
    let delay;
    if (code === 1001) {
      delay = backoffDelay(0, { ...o, jitter: 1 }, o.random); // draining: at once, spread out
    } else if (code === 4429) {
      delay = backoffDelay(this._attempt, { ...o, initialDelay: Math.max(o.longDelay, o.initialDelay) }, o.random);
    } else {
      delay = backoffDelay(this._attempt, o, o.random);
    }
    const attempt = ++this._attempt;
    this._emit("disconnected", { code, reason, reconnect: true, delay, attempt });
    this._setState(RECONNECTING, { code, reason, delay, attempt });
    clearTimeout(this._timers.reconnect);
    const generation = this._generation;
    this._timers.reconnect = setTimeout(() => {
      this._timers.reconnect = null;
      if (generation === this._generation) this._open();
    }, delay);
  }

  _stop(code, reason) {
    clearTimeout(this._timers.reconnect);
    this._timers.reconnect = null;
    if (typeof window !== "undefined") window.removeEventListener("online", this._onOnline);
    const error = new RoomcastError("disconnected", `the client stopped (${code}${reason ? ": " + reason : ""})`);
    this._failCalls(error);
    for (const p of this._publishes.values()) {
      clearTimeout(p.timer);
      p.reject(error);
    }
    this._publishes.clear();
    for (const list of this._waiters.values()) for (const w of list) w.reject(error);
    this._waiters.clear();
    const wasDisconnected = this.state === DISCONNECTED;
    if (!wasDisconnected) this._emit("disconnected", { code, reason, reconnect: false });
    this._setState(DISCONNECTED, { code, reason });
  }

  /** Resolves once connected; rejects if the client stops or `timeout` ms pass. */
  whenConnected(timeout = this.options.requestTimeout) {
    if (this.state === CONNECTED) return Promise.resolve();
    if (this.state === DISCONNECTED) return Promise.reject(new RoomcastError("disconnected", "the client is not connecting; call connect() first"));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._stateWaiters = this._stateWaiters.filter((w) => w !== waiter);
        reject(new RoomcastError("timeout", `not connected within ${timeout} ms`));
      }, timeout);
      const waiter = (state) => {
        if (state === CONNECTED) {
          clearTimeout(timer);
          resolve();
        } else if (state === DISCONNECTED) {
          clearTimeout(timer);
          reject(new RoomcastError("disconnected", "the client stopped before it connected"));
        } else {
          this._stateWaiters.push(waiter);
        }
      };
      this._stateWaiters.push(waiter);
    });
  }

  // ------------------------------------------------------------------ frames in
  _onFrame(text) {
    this._lastFrameAt = Date.now();
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      this._emit("error", { code: "bad_json", message: "the server sent a frame that is not JSON" });
      return;
    }
    this._emit("frame", frame);
    switch (frame.type) {
      case "connected":
        return this._onConnected(frame);
      case "message":
        return this._onMessage(frame);
      case "joined":
      case "left":
      case "direct":
        return this._emit(frame.type, frame);
      case "subscribed":
        return this._onSubscribed(frame);
      case "reset":
        return this._onReset(frame);
      case "error":
        return this._onError(frame);
      case "published":
        return this._onPublished(frame);
      default:
        return this._resolve(frame);
    }
  }

  _onConnected(frame) {
    clearTimeout(this._timers.connect);
    this._timers.connect = null;
    this.connection = frame;
    const serverTime = Date.parse(frame.server_time);
    this._skew = Number.isFinite(serverTime) ? serverTime - Date.now() : 0;
    this._attempt = 0;
    // Resubscribe and resend before anybody else may send: the order on the wire is ours.
    this._resubscribe();
    for (const p of this._publishes.values()) this._sendPublish(p);
    this._startPing();
    this._scheduleRefresh();
    this._setState(CONNECTED, { connection: frame });
    this._emit("connected", frame);
  }

  _onMessage(frame) {
    const room = frame.room;
    const at = this.positions.get(room);
    if (at && typeof frame.offset === "number") {
      if (frame.offset <= at.offset) return; // already seen (a replay overlapping live)
      at.offset = frame.offset;
    }
    const until = this._replayUntil.get(room);
    if (until !== undefined) {
      if (frame.offset <= until) frame.replayed = true;
      if (frame.offset >= until) this._replayUntil.delete(room);
    }
    this._emit("message", frame);
  }

  _onSubscribed(frame) {
    const sent = this._subscribeIds.get(frame.id);
    this._subscribeIds.delete(frame.id);
    const since = (sent && sent.since) || {};
    for (const [room, entry] of Object.entries(frame.rooms || {})) {
      const wanted = this.subscriptions.has(room);
      if (!entry.ok) {
        if (entry.error !== "unavailable") {
          this.subscriptions.delete(room);
          this.positions.delete(room);
        }
      } else if (wanted) {
        const from = since[room];
        if (from) {
          let offset = entry.offset; // another stream: start at its top
          if (entry.recovered) offset = from.offset;
          else if (entry.missed) offset = entry.missed.to;
          const at = this.positions.get(room);
          if (at && at.epoch === entry.epoch && at.offset > offset) offset = at.offset;
          this.positions.set(room, { offset, epoch: entry.epoch });
          if (entry.offset > offset) this._replayUntil.set(room, entry.offset);
          this._emit("recovery", {
            room, recovered: !!entry.recovered, missed: entry.missed || null,
            epoch: entry.epoch, offset: entry.offset, since: from,
            epochChanged: from.epoch !== entry.epoch,
          });
        } else {
          this.positions.set(room, { offset: entry.offset, epoch: entry.epoch });
        }
      }
      this._emit("subscribed", { room, ...entry });
      const waiters = this._waiters.get(room);
      this._waiters.delete(room);
      for (const w of waiters || []) w.resolve(entry);
    }
  }

  /**
   * The room's stream changed under the subscription (§17): a new epoch (history lost),
   * or a gap in the same one (`missed`). The position moves to `offset` of `epoch` (in the
   * same epoch never back), so the new stream's offsets are not taken for duplicates of
   * the old one's; the `reset` event tells the app to reload the room from its own source.
   */
  _onReset(frame) {
    const room = frame.room;
    if (!this.subscriptions.has(room) || typeof frame.epoch !== "string" || typeof frame.offset !== "number") return;
    const previous = this.positions.get(room) || null;
    let offset = frame.offset;
    if (previous && previous.epoch === frame.epoch && previous.offset > offset) offset = previous.offset;
    this.positions.set(room, { offset, epoch: frame.epoch });
    this._replayUntil.delete(room);
    this._emit("reset", {
      room, epoch: frame.epoch, offset: frame.offset, missed: frame.missed || null,
      previous: previous && { offset: previous.offset, epoch: previous.epoch },
      epochChanged: !previous || previous.epoch !== frame.epoch,
    });
  }

  _onError(frame) {
    const error = new RoomcastError(frame.code, frame.message, frame);
    const pub = this._publishIds.get(frame.id);
    if (pub) {
      this._publishIds.delete(frame.id);
      this._publishes.delete(pub.frame.idempotency_key);
      clearTimeout(pub.timer);
      pub.reject(error);
      return;
    }
    const sub = this._subscribeIds.get(frame.id);
    if (sub) {
      this._subscribeIds.delete(frame.id);
      for (const room of sub.rooms) {
        const waiters = this._waiters.get(room);
        this._waiters.delete(room);
        if (waiters) {
          // A fresh subscribe the server refused outright: drop it.
          this.subscriptions.delete(room);
          for (const w of waiters) w.reject(error);
        }
      }
      if (frame.code === "rate_limited" && this.state === CONNECTED) {
        // A resubscribe over the rate limit: try again shortly, on this connection.
        const rooms = sub.rooms.filter((r) => this.subscriptions.has(r));
        const generation = this._generation;
        setTimeout(() => {
          if (generation === this._generation && this.state === CONNECTED) this._resubscribe(rooms);
        }, 1000);
      }
      this._emit("error", { code: frame.code, message: frame.message, frame });
      return;
    }
    if (this._calls.has(frame.id)) {
      const call = this._calls.get(frame.id);
      this._calls.delete(frame.id);
      clearTimeout(call.timer);
      call.reject(error);
      return;
    }
    this._emit("error", { code: frame.code, message: frame.message, frame });
  }

  _onPublished(frame) {
    const pub = this._publishIds.get(frame.id);
    if (!pub) return this._resolve(frame);
    this._publishIds.delete(frame.id);
    this._publishes.delete(pub.frame.idempotency_key);
    clearTimeout(pub.timer);
    pub.resolve({ room: frame.room, offset: frame.offset, duplicate: !!frame.duplicate, epoch: frame.epoch ?? null });
  }

  _resolve(frame) {
    const call = frame.id !== undefined && frame.id !== null ? this._calls.get(frame.id) : undefined;
    if (!call) return;
    this._calls.delete(frame.id);
    clearTimeout(call.timer);
    call.resolve(frame);
  }

  // ------------------------------------------------------------------ frames out
  _send(frame) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  _newId() {
    return this._nextId++;
  }

  async _request(frame, timeout = this.options.requestTimeout) {
    const deadline = Date.now() + timeout;
    await this.whenConnected(timeout);
    const id = this._newId();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._calls.delete(id);
        reject(new RoomcastError("timeout", `no reply to ${frame.type} within ${timeout} ms`));
      }, Math.max(0, deadline - Date.now()));
      this._calls.set(id, { resolve, reject, timer });
      if (!this._send({ ...frame, id })) {
        this._calls.delete(id);
        clearTimeout(timer);
        reject(new RoomcastError("connection_lost", "the connection closed before the command was sent"));
      }
    });
  }

  _sendSubscribe(rooms, filters, since) {
    const id = this._newId();
    const frame = { type: "subscribe", id, rooms };
    if (filters.events) frame.events = filters.events;
    if (filters.where) frame.where = filters.where;
    if (filters.presence) frame.presence = true;
    if (since && Object.keys(since).length) frame.since = since;
    this._subscribeIds.set(id, { rooms, since: frame.since || null });
    this._send(frame);
  }

  _resubscribe(only = null) {
    // One subscribe per distinct set of filters, at most 100 rooms each.
    const groups = new Map();
    for (const [room, filters] of this.subscriptions) {
      if (only && !only.includes(room)) continue;
      const key = JSON.stringify([filters.events || null, filters.where || null, !!filters.presence]);
      if (!groups.has(key)) groups.set(key, { filters, rooms: [] });
      groups.get(key).rooms.push(room);
    }
    for (const { filters, rooms } of groups.values()) {
      for (let i = 0; i < rooms.length; i += 100) {
        const chunk = rooms.slice(i, i + 100);
        const since = {};
        for (const room of chunk) {
          const at = this.positions.get(room);
          if (at) since[room] = { offset: at.offset, epoch: at.epoch };
        }
        this._sendSubscribe(chunk, filters, since);
      }
    }
  }

  // ------------------------------------------------------------------ commands
  /**
   * Subscribe to one room or a list; resolves with {room: entry} once the server answered
   * for every room (entry as in the `subscribed` reply). Kept across reconnects, which
   * resubscribe with `since`. Options: events, where, presence, since ({room: {offset, epoch}}).
   */
  subscribe(rooms, { events, where, presence = false, since } = {}) {
    const list = Array.isArray(rooms) ? [...rooms] : [rooms];
    if (list.length < 1 || list.length > 100) return Promise.reject(new RangeError("subscribe takes 1 to 100 rooms"));
    const filters = { events: events || null, where: where || null, presence: !!presence };
    const sinceSent = {};
    for (const room of list) {
      this.subscriptions.set(room, filters);
      if (since && since[room]) {
        this.positions.set(room, { offset: since[room].offset, epoch: since[room].epoch });
        sinceSent[room] = since[room];
      }
    }
    const timeout = this.options.requestTimeout;
    const pending = list.map(
      (room) =>
        new Promise((resolve, reject) => {
          if (!this._waiters.has(room)) this._waiters.set(room, []);
          this._waiters.get(room).push({ resolve, reject });
        }),
    );
    if (this.state === CONNECTED) this._sendSubscribe(list, filters, sinceSent);
    else if (this.state === DISCONNECTED) {
      // Recorded; sent once connect() has connected.
    }
    let timer;
    const timeoutPromise = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new RoomcastError("timeout", `no subscribed reply within ${timeout} ms (the subscription is kept and retried on reconnect)`)), timeout);
    });
    return Promise.race([Promise.all(pending), timeoutPromise]).then((entries) => {
      clearTimeout(timer);
      return Object.fromEntries(list.map((room, i) => [room, entries[i]]));
    }, (error) => {
      clearTimeout(timer);
      throw error;
    });
  }

  /** Stop receiving a room (or a list); forgets its position. */
  async unsubscribe(rooms) {
    const list = Array.isArray(rooms) ? [...rooms] : [rooms];
    for (const room of list) {
      this.subscriptions.delete(room);
      this.positions.delete(room);
      this._replayUntil.delete(room);
    }
    if (this.state !== CONNECTED) return { type: "unsubscribed", rooms: list };
    return this._request({ type: "unsubscribe", rooms: list });
  }

  /**
   * Publish into a room; resolves with {room, offset, duplicate, epoch}. It carries an
   * idempotency key (made up unless given) and is sent again after a reconnect until the
   * server answers, so it is delivered once. Fails after publishTimeout ms or a stop.
   */
  publish(room, data, { event = null, idempotencyKey = null } = {}) {
    const key = idempotencyKey || newKey();
    const frame = { type: "publish", room, data, idempotency_key: key };
    if (event !== null && event !== undefined) frame.event = event;
    if (this.state === DISCONNECTED) return Promise.reject(new RoomcastError("disconnected", "the client is not connected; call connect() first"));
    return new Promise((resolve, reject) => {
      const pending = { frame, resolve, reject, timer: null };
      pending.timer = setTimeout(() => {
        this._publishes.delete(key);
        for (const [id, p] of this._publishIds) if (p === pending) this._publishIds.delete(id);
        reject(new RoomcastError("timeout", `no reply to publish within ${this.options.publishTimeout} ms; it may or may not have been delivered, retry with idempotencyKey "${key}"`));
      }, this.options.publishTimeout);
      this._publishes.set(key, pending);
      if (this.state === CONNECTED) this._sendPublish(pending);
    });
  }

  _sendPublish(pending) {
    const id = this._newId();
    if (this._send({ ...pending.frame, id })) this._publishIds.set(id, pending);
  }

  /** Messages kept in a room's history: resolves with {room, epoch, offset, messages}. */
  history(room, { since = null, limit = null } = {}) {
    const frame = { type: "history", room };
    if (since !== null && since !== undefined) frame.since = since;
    if (limit !== null && limit !== undefined) frame.limit = limit;
    return this._request(frame);
  }

  /** Who is in a room: resolves with [{user_id, connections, info}]. */
  async presence(room) {
    return (await this._request({ type: "presence", room })).users;
  }

  /** Round trip to the server, in ms. */
  async ping() {
    const start = performance.now();
    await this._request({ type: "ping" }, this.options.pingTimeout);
    return performance.now() - start;
  }

  /** Refresh the connection's token now (from the token function, or the one given). */
  async refresh(token = null) {
    const fresh = token || (await this._token());
    const reply = await this._request({ type: "refresh", token: fresh });
    this.token = fresh;
    this._scheduleRefresh();
    this._emit("refreshed", { expiresAt: reply.expires_at });
    return reply;
  }

  // ------------------------------------------------------------------ liveness
  _startPing() {
    const { pingInterval, pingTimeout } = this.options;
    if (!pingInterval) return;
    const ws = this._ws;
    this._timers.ping = setInterval(() => {
      if (ws !== this._ws || this._timers.pingDeadline !== null) return;
      const sentAt = Date.now();
      this._send({ type: "ping", id: `ping-${this._newId()}` });
      this._timers.pingDeadline = setTimeout(() => {
        this._timers.pingDeadline = null;
        if (this._lastFrameAt < sentAt) this._drop(ws, DEAD_LINK, `no answer to a ping within ${pingTimeout} ms`);
      }, pingTimeout);
    }, pingInterval);
  }

  _scheduleRefresh() {
    clearTimeout(this._timers.refresh);
    this._timers.refresh = null;
    const exp = tokenExpiry(this.token || "");
    if (exp === null || typeof this.options.token !== "function") return;
    const remaining = exp * 1000 - (Date.now() + this._skew);
    const lead = Math.min(this.options.refreshBefore, Math.max(remaining, 0) / 4);
    const delay = Math.max(0, remaining - lead);
    const ws = this._ws;
    this._timers.refresh = setTimeout(() => {
      this._timers.refresh = null;
      if (ws === this._ws) this._autoRefresh(remaining - delay);
    }, delay);
  }

  async _autoRefresh(left) {
    let fresh;
    try {
      fresh = await this._token();
    } catch (error) {
      this._emit("error", { code: "token", message: `could not refresh the token: ${error.message}`, error });
      return;
    }
    if (fresh === this.token) {
      // The token function has nothing newer yet: ask again halfway to the expiry.
      if (left > 2000) {
        const ws = this._ws;
        this._timers.refresh = setTimeout(() => {
          this._timers.refresh = null;
          if (ws === this._ws) this._autoRefresh(left / 2);
        }, left / 2);
      }
      return;
    }
    try {
      await this.refresh(fresh);
    } catch (error) {
      this._emit("error", { code: error.code || "refresh", message: `token refresh failed: ${error.message}`, error });
    }
  }
}

export default RoomcastClient;
