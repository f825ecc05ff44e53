/**
 * Types of roomcast-react.js, the React bindings of roomcast.js (React 18 or 19 as a peer).
 * See docs/clients.md.
 */
import type { ReactElement, ReactNode } from "react";
import type {
  ConnectedFrame,
  ConnectionState,
  Json,
  MessageFrame,
  Position,
  RecoveryEvent,
  ResetEvent,
  RoomcastClient,
  RoomcastError,
  RoomcastOptions,
} from "./roomcast.js";

/** Either an app-made `client`, or `url` and `options` for a client the provider owns. */
export type RoomcastProviderProps =
  | { client: RoomcastClient; url?: undefined; options?: undefined; children?: ReactNode }
  | { client?: undefined; url: string | null; options: RoomcastOptions; children?: ReactNode };

/** Gives its children one roomcast client (made, connected and closed here when given `url`). */
export declare function RoomcastProvider(props: RoomcastProviderProps): ReactElement;

/** What useRoomcast() returns: the client and its connection status. */
export interface RoomcastStatus {
  /** null until the provider has made its client (or without a url). */
  client: RoomcastClient | null;
  state: ConnectionState;
  connected: boolean;
  connection: ConnectedFrame | null;
  /** The close code, reason, next delay and attempt number of the last state change. */
  code: number | null;
  reason: string | null;
  delay: number | null;
  attempt: number | null;
}

/** The connection's status; re-renders on every state change. */
export declare function useRoomcast(): RoomcastStatus;

export interface UseRoomOptions {
  /** Start after this position: what is still in history after it is replayed. */
  since?: Position | null;
  /** Only these events (the subscription's filter; history fetched later is filtered alike). */
  events?: string[] | null;
  /** Only messages whose data has these field values. */
  where?: { [field: string]: Json } | null;
  /** Load the newest n messages from history when subscribed (without `since`). */
  history?: number;
  /** Keep at most this many newest messages (default 1000). */
  limit?: number;
}

/** A message in a room's list: the frame, the epoch it belongs to, and a key for React lists. */
export type RoomMessage<T = Json> = MessageFrame<T> & { epoch: string | null; key: string };

/**
 * idle: no client or no room; subscribing: waiting for the server; live: subscribed on the
 * live connection; recovering: the connection was lost, resubscribing when it is back;
 * error: the server refused the room (see `error`).
 */
export type RoomStatus = "idle" | "subscribing" | "live" | "recovering" | "error";

export interface RoomView<T = Json> {
  room: string | null;
  status: RoomStatus;
  /** Oldest first: earlier epochs before later ones, offsets ascending within one. */
  messages: RoomMessage<T>[];
  /** The client's position in the room: store it to pass as `since` later. */
  position: Position | null;
  error: RoomcastError | Error | null;
  /** The last recovery after a resubscribe, and the last reset of the room's stream. */
  recovery: RecoveryEvent | null;
  reset: ResetEvent | null;
}

/** A room's messages, live, recovered across reconnects; subscribed while mounted. */
export declare function useRoom<T = Json>(room: string | null, options?: UseRoomOptions): RoomView<T>;
