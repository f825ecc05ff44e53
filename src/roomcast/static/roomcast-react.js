/**
 * roomcast-react.js — React bindings for roomcast.js: <RoomcastProvider> owns (or is given)
 * one client, useRoomcast() reads its connection status, useRoom(room) keeps a room's live
 * message list that recovers what it can after reconnects, server restarts and resets.
 * React (18 or 19) is a peer: imported from "react", never bundled here. See docs/clients.md.
 */
import { createContext, createElement, useContext, useEffect, useRef, useState } from "react";
import { CONNECTED, DISCONNECTED, RoomcastClient, RoomcastError } from "./roomcast.js";

const RoomcastContext = createContext(null);

/** The status useRoomcast() returns, from the client and its last `state` event. */
function statusOf(client, detail = null) {
  const state = client ? client.state : DISCONNECTED;
  const d = detail || {};
  return {
    client,
    state,
    connected: state === CONNECTED,
    connection: client ? client.connection : null,
    code: d.code ?? null,
    reason: d.reason ?? null,
    delay: d.delay ?? null,
    attempt: d.attempt ?? null,
  };
}

/**
 * Gives its children one roomcast client. Either `client` (made, connected and closed by
 * the app) or `url` and `options` (the provider makes the client, connects it when mounted
 * and closes it when unmounted or when `url` changes; the latest `options.token` is used
 * for every connection and refresh, so a new token in props is picked up).
 */
export function RoomcastProvider({ client: given = null, url = null, options = null, children = null }) {
  const latest = useRef(options);
  latest.current = options;
  const [owned, setOwned] = useState(null);
  const client = given || owned;
  const [status, setStatus] = useState(() => statusOf(client));

  useEffect(() => {
    let live = given;
    if (!live) {
      if (!url) return undefined;
      if (!latest.current || !latest.current.token) {
        throw new TypeError("RoomcastProvider needs options.token (a JWT, or a function returning one) beside url");
      }
      const token = () => {
        const source = latest.current && latest.current.token;
        return typeof source === "function" ? source() : source;
      };
      live = new RoomcastClient(url, { ...latest.current, token });
      setOwned(live);
    }
    const client = live;
    setStatus(statusOf(client));
    const off = client.on("state", (detail) => setStatus(statusOf(client, detail)));
    if (!given) client.connect();
    return () => {
      off();
      if (!given) {
        client.close("the page no longer needs this connection");
        setOwned(null);
      }
      setStatus(statusOf(null));
    };
  }, [given, url]);

  return createElement(RoomcastContext.Provider, { value: status }, children);
}

/** The connection's status: {client, state, connected, connection, code, reason, delay, attempt}. */
export function useRoomcast() {
  const status = useContext(RoomcastContext);
  if (status === null) {
    throw new Error("useRoomcast() and useRoom() work only inside <RoomcastProvider>: wrap the app (or this part of it) in one");
  }
  return status;
}

// ------------------------------------------------------------------ shared subscriptions
// Hooks on the same room of the same client share one subscription (the protocol has one
// set of filters per room and connection); the last hook to let go unsubscribes.
const holds = new WeakMap(); // client -> Map(room -> {count, filters, promise})

/** Take a share of the client's subscription to `room` (made, or re-filtered, if need be). */
function hold(client, room, filters, since) {
  if (!holds.has(client)) holds.set(client, new Map());
  const rooms = holds.get(client);
  const wanted = JSON.stringify(filters);
  let held = rooms.get(room);
  if (!held) {
    held = { count: 0, filters: null, promise: null };
    rooms.set(room, held);
  }
  if (held.filters !== wanted) {
    const options = { events: filters.events, where: filters.where };
    if (since) options.since = { [room]: since };
    const promise = client.subscribe(room, options).then((entries) => {
      const entry = entries[room];
      if (!entry.ok && entry.error !== "unavailable") forget(rooms, room, held, promise);
      return entry;
    });
    // A time-out is not final: the client keeps the room and subscribes once connected.
    promise.catch((error) => error.code !== "timeout" && forget(rooms, room, held, promise));
    held.filters = wanted;
    held.promise = promise;
  }
  held.count++;
  return held;
}

/** Refused or stopped: the client no longer has the room, so a later hook asks again. */
function forget(rooms, room, held, promise) {
  if (held.promise === promise && rooms.get(room) === held) rooms.delete(room);
}

function release(client, room, held) {
  held.count--;
  if (held.count > 0) return;
  // Unsubscribe a little later: a component mounted again in the same commit (StrictMode,
  // a moved component) takes the subscription over instead.
  Promise.resolve().then(() => {
    const rooms = holds.get(client);
    if (held.count > 0 || !rooms || rooms.get(room) !== held) return;
    rooms.delete(room);
    client.unsubscribe(room).catch(() => {});
  });
}

// ------------------------------------------------------------------ the room's list
function sameJson(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** Whether a message passes a subscription's filters (history is not filtered by the server). */
function passes(message, { events, where }) {
  if (events && !events.includes(message.event)) return false;
  if (!where) return true;
  const data = message.data;
  if (data === null || typeof data !== "object") return false;
  return Object.entries(where).every(([field, value]) => sameJson(data[field], value));
}

function refused(room, code) {
  return new RoomcastError(code, `cannot subscribe to ${room}: ${code}`);
}

function emptyView(room, status) {
  return { room, status, messages: [], epochs: [], position: null, error: null, recovery: null, reset: null };
}

/**
 * Add messages of one epoch to the list: each (epoch, offset) once, in stream order (older
 * epochs first, offsets ascending within one), at most `limit` of the newest kept.
 */
function mergeInto(view, messages, epoch, limit) {
  const seen = new Set(view.messages.map((m) => m.key));
  const fresh = [];
  for (const m of messages) {
    const key = `${epoch}:${m.offset}`;
    if (seen.has(key)) continue;
    seen.add(key);
    fresh.push({ ...m, epoch, key });
  }
  if (!fresh.length) return view;
  const epochs = view.epochs.includes(epoch) ? view.epochs : [...view.epochs, epoch];
  const rank = (m) => epochs.indexOf(m.epoch);
  const order = (a, b) => rank(a) - rank(b) || a.offset - b.offset;
  const last = view.messages[view.messages.length - 1];
  let list = view.messages.concat(fresh);
  if (fresh.length > 1 || (last && order(last, fresh[0]) > 0)) list.sort(order); // else: live, in order
  if (list.length > limit) list = list.slice(list.length - limit);
  return { ...view, messages: list, epochs };
}

/**
 * A function that fetches offsets from..to of a stream (`epoch`) from history, the newest
 * `limit` of them at most, and merges what passes the filters; failures go to `failed`.
 */
function filler(client, room, filters, limit, merge, failed) {
  return async (epoch, from, to) => {
    const first = Math.max(from, to - Math.min(limit, 1000) + 1, 1);
    if (to < first) return;
    try {
      const page = await client.history(room, { since: first - 1, limit: to - first + 1 });
      if (page.epoch !== epoch) return; // the stream moved on again: its own event follows
      merge(page.messages.filter((m) => m.offset <= to && passes(m, filters)), epoch);
    } catch (error) {
      failed(error);
    }
  };
}

/** Subscribe a hook to a room and keep its view up to date; returns the clean-up. */
function followRoom(client, room, filters, settings, update) {
  const { since, history, limit } = settings;
  let active = true;
  const set = (change) => active && update((view) => ({ ...view, ...change(view) }));
  const position = () => {
    const at = client.positions.get(room);
    return at ? { offset: at.offset, epoch: at.epoch } : null;
  };
  const merge = (messages, epoch) => {
    if (active) update((view) => ({ ...mergeInto(view, messages, epoch, limit), position: position() }));
  };
  const fill = filler(client, room, filters, limit, merge, (error) => set(() => ({ error })));
  const onRoom = (handler) => (detail) => detail.room === room && handler(detail);
  const offs = [
    client.on("message", onRoom((m) => merge([m], (client.positions.get(room) || {}).epoch ?? null))),
    client.on("subscribed", onRoom((s) => {
      if (s.ok) set(() => ({ status: "live", error: null, position: position() }));
      else set((v) => ({ status: s.error === "unavailable" ? v.status : "error", error: refused(room, s.error) }));
    })),
    client.on("recovery", onRoom((r) => {
      set(() => ({ recovery: r }));
      if (r.missed) fill(r.epoch, r.missed.from, r.missed.to);
      else if (!r.recovered) fill(r.epoch, 1, r.offset); // a new stream: all of it is new to us
    })),
    client.on("reset", onRoom((r) => {
      set(() => ({ reset: r, position: position() }));
      if (r.missed) fill(r.epoch, r.missed.from, r.missed.to);
    })),
    client.on("state", ({ state }) => {
      if (state !== CONNECTED) set((v) => ({ status: v.status === "live" ? "recovering" : v.status }));
    }),
  ];
  const held = hold(client, room, filters, since);
  held.promise.then((entry) => {
    if (!active) return;
    if (!entry.ok) {
      if (entry.error !== "unavailable") set(() => ({ status: "error", error: refused(room, entry.error) }));
      return;
    }
    set((v) => ({ status: client.state === CONNECTED ? "live" : v.status, position: v.position || position() }));
    if (!since && history > 0) fill(entry.epoch, entry.offset - history + 1, entry.offset);
  }, (error) => {
    if (error.code !== "timeout") set(() => ({ status: "error", error }));
  });
  return () => {
    active = false;
    for (const off of offs) off();
    release(client, room, held);
  };
}

/**
 * A room's messages, live: subscribes while mounted (hooks on the same room share one
 * subscription) and keeps `{status, messages, position, error, recovery, reset}`. Options:
 * `since` ({offset, epoch}: start after it), `events` and `where` (the subscription's
 * filters), `history` (load the newest n messages when subscribed), `limit` (keep at most
 * this many, default 1000). After a reconnect it gets what it missed: replayed by the server,
 * or fetched from history when the stream was replaced or a gap was not replayed.
 */
export function useRoom(room, { since = null, events = null, where = null, history = 0, limit = 1000 } = {}) {
  const { client } = useRoomcast();
  const filters = { events: events ? [...events] : null, where: where ? { ...where } : null };
  const filterKey = JSON.stringify(filters);
  const settings = useRef(null);
  settings.current = { since, history, limit };
  const [view, setView] = useState(() => emptyView(room, client && room ? "subscribing" : "idle"));

  useEffect(() => {
    if (!client || !room) {
      setView(emptyView(room, "idle"));
      return undefined;
    }
    setView(emptyView(room, "subscribing"));
    return followRoom(client, room, JSON.parse(filterKey), settings.current, setView);
  }, [client, room, filterKey]);

  return view;
}
