/**
 * Types of roomcast.js, the browser client for roomcast (wire protocol v1).
 * Served beside it at /roomcast.d.ts; see docs/clients.md.
 */

/** Any JSON value: what a message's `data` may be. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

export type ConnectionState = "connecting" | "connected" | "reconnecting" | "disconnected";

export declare const CONNECTING: "connecting";
export declare const CONNECTED: "connected";
export declare const RECONNECTING: "reconnecting";
export declare const DISCONNECTED: "disconnected";

/** Close codes after which the client does not reconnect (4401 only without a new token). */
export declare const STOP_CODES: readonly number[];

/** The client's own close code for a link that stopped answering (never sent by servers). */
export declare const DEAD_LINK: 4008;

/** A place in a room's stream: the last offset seen, within an epoch. */
export interface Position {
  offset: number;
  epoch: string;
}

/** A range of offsets, both ends included. */
export interface OffsetRange {
  from: number;
  to: number;
}

/** A token, or a function returning one (or a promise of one), called for every connection. */
export type TokenSource = string | (() => string | Promise<string>);

/** Client options; times in milliseconds. */
export interface RoomcastOptions {
  /** A JWT, or a function returning one; a function lets the client refresh it. */
  /** `null`: connect without a token; the server's connect hook admits the connection by
   * the page's own session cookie (§11). */
  token: TokenSource | null;
  initialDelay?: number;
  factor?: number;
  maxDelay?: number;
  jitter?: number;
  longDelay?: number;
  connectTimeout?: number;
  requestTimeout?: number;
  publishTimeout?: number;
  pingInterval?: number;
  pingTimeout?: number;
  refreshBefore?: number;
  /** The WebSocket class to use (defaults to the global one). */
  WebSocket?: typeof WebSocket;
  random?: () => number;
}

/** Options of backoffDelay: the backoff part of RoomcastOptions. */
export type BackoffOptions = Partial<
  Pick<RoomcastOptions, "initialDelay" | "factor" | "maxDelay" | "jitter">
>;

// ------------------------------------------------------------------ frames
export interface ConnectedFrame {
  type: "connected";
  connection_id: string;
  user_id: string;
  node: string;
  heartbeat: { interval: number; timeout: number };
  limits: { max_message_bytes: number; rate_per_second: number; rate_burst: number };
  server_time: string;
}

export interface MessageFrame<T = Json> {
  type: "message";
  room: string;
  offset: number;
  event: string | null;
  data: T;
  sender: string | null;
  ts: string;
  /** Set by the client on messages replayed by a resume with `since`. */
  replayed?: boolean;
}

export interface JoinedFrame {
  type: "joined";
  room: string;
  user_id: string;
  info: { [key: string]: Json };
}

export interface LeftFrame {
  type: "left";
  room: string;
  user_id: string;
}

export interface DirectFrame {
  type: "direct";
  event?: string | null;
  data: Json;
  [key: string]: unknown;
}

/** One room's entry in a `subscribed` reply. */
export interface SubscribeEntry {
  ok: boolean;
  offset?: number;
  epoch?: string;
  recovered?: boolean;
  missed?: OffsetRange;
  /** Why the room was refused: forbidden, bad_room, too_many_subscriptions, unavailable, … */
  error?: string;
}

export interface ErrorFrame {
  type: "error";
  id?: string | number;
  code: string;
  message: string;
}

/** Any frame the server sends, as parsed. */
export interface Frame {
  type: string;
  [key: string]: unknown;
}

export interface HistoryPage<T = Json> {
  type: "history";
  room: string;
  epoch: string;
  offset: number;
  messages: MessageFrame<T>[];
}

export interface PresenceUser {
  user_id: string;
  connections: number;
  info: { [key: string]: Json };
}

export interface PublishResult {
  room: string;
  offset: number;
  duplicate: boolean;
  /** The stream the message went into, when the server names it. */
  epoch: string | null;
}

export interface UnsubscribedReply {
  type: "unsubscribed";
  rooms: string[];
}

export interface RefreshedReply {
  type: "refreshed";
  expires_at: string;
}

// ------------------------------------------------------------------ events
export interface StateEvent {
  state: ConnectionState;
  previous: ConnectionState;
  code?: number;
  reason?: string;
  delay?: number;
  attempt?: number;
  connection?: ConnectedFrame;
}

export interface DisconnectedEvent {
  code: number;
  reason: string;
  reconnect: boolean;
  delay?: number;
  attempt?: number;
}

export interface SubscribedEvent extends SubscribeEntry {
  room: string;
}

export interface RecoveryEvent {
  room: string;
  recovered: boolean;
  missed: OffsetRange | null;
  epoch: string;
  offset: number;
  since: Position;
  epochChanged: boolean;
}

export interface ResetEvent {
  room: string;
  epoch: string;
  offset: number;
  missed: OffsetRange | null;
  previous: Position | null;
  epochChanged: boolean;
}

export interface ErrorEvent {
  code: string;
  message: string;
  frame?: ErrorFrame;
  error?: unknown;
}

/** Each event's detail, by event type (what `on(type, fn)` passes to fn). */
export interface RoomcastEventMap {
  state: StateEvent;
  connected: ConnectedFrame;
  disconnected: DisconnectedEvent;
  message: MessageFrame;
  joined: JoinedFrame;
  left: LeftFrame;
  direct: DirectFrame;
  subscribed: SubscribedEvent;
  recovery: RecoveryEvent;
  reset: ResetEvent;
  refreshed: { expiresAt: string };
  error: ErrorEvent;
  frame: Frame;
}

export type RoomcastEventType = keyof RoomcastEventMap;

// ------------------------------------------------------------------ the client
/** An error reply, a time-out or a lost connection; `code` says which. */
export declare class RoomcastError extends Error {
  constructor(code: string, message: string, frame?: ErrorFrame | null);
  /** forbidden, timeout, disconnected, connection_lost, rate_limited, … */
  code: string;
  frame: ErrorFrame | null;
}

export interface SubscribeOptions {
  events?: string[] | null;
  where?: { [field: string]: Json } | null;
  presence?: boolean;
  since?: { [room: string]: Position };
}

export interface PublishOptions {
  event?: string | null;
  idempotencyKey?: string | null;
}

export interface HistoryOptions {
  /** Offset, exclusive: the first `limit` messages after it; without it the newest. */
  since?: number | null;
  limit?: number | null;
}

/** A room's filters as the client resubscribes with them. */
export interface RoomFilters {
  events: string[] | null;
  where: { [field: string]: Json } | null;
  presence: boolean;
}

/** One logical connection to a roomcast server that survives reconnects. */
export declare class RoomcastClient extends EventTarget {
  constructor(url: string, options: RoomcastOptions);
  readonly url: string;
  readonly options: Required<Omit<RoomcastOptions, "WebSocket">> & Pick<RoomcastOptions, "WebSocket">;
  readonly state: ConnectionState;
  /** The token the live (or last) connection used. */
  readonly token: string | null;
  /** The server's `connected` frame while connected. */
  readonly connection: ConnectedFrame | null;
  readonly subscriptions: ReadonlyMap<string, RoomFilters>;
  /** room → the last message seen (offset within epoch). */
  readonly positions: ReadonlyMap<string, Position>;

  /** Listen to an event with a function of its detail; returns a function that stops it. */
  on<K extends RoomcastEventType>(type: K, fn: (detail: RoomcastEventMap[K]) => void): () => void;
  /** Start connecting (and keep reconnecting until close() or a stop code). */
  connect(): void;
  /** Close for good: no reconnect; pending requests and publishes fail. */
  close(reason?: string): void;
  /** Resolves once connected; rejects if the client stops or `timeout` ms pass. */
  whenConnected(timeout?: number): Promise<void>;
  subscribe(rooms: string | string[], options?: SubscribeOptions): Promise<{ [room: string]: SubscribeEntry }>;
  unsubscribe(rooms: string | string[]): Promise<UnsubscribedReply>;
  /** `data` must be JSON-serialisable. */
  publish(room: string, data: unknown, options?: PublishOptions): Promise<PublishResult>;
  history<T = Json>(room: string, options?: HistoryOptions): Promise<HistoryPage<T>>;
  presence(room: string): Promise<PresenceUser[]>;
  /** Round trip to the server, in ms. */
  ping(): Promise<number>;
  refresh(token?: string | null): Promise<RefreshedReply>;
}

/** How long to wait before reconnect attempt `attempt` (0-based), in ms. */
export declare function backoffDelay(attempt: number, options?: BackoffOptions, random?: () => number): number;

/** The `exp` claim of a JWT (seconds), or null; the signature is not checked here. */
export declare function tokenExpiry(token: string): number | null;

export default RoomcastClient;
