// Uses every export of roomcast.js and roomcast-react.js the way an app would, so that
// `tsc --noEmit` checks their declarations; each `@ts-expect-error` line is a misuse the
// types must refuse (tsc fails if one of them is accepted).
import { StrictMode, useState } from "react";

import RoomcastDefault, {
  backoffDelay,
  CONNECTED,
  CONNECTING,
  DEAD_LINK,
  DISCONNECTED,
  RECONNECTING,
  RoomcastClient,
  RoomcastError,
  STOP_CODES,
  tokenExpiry,
  type ConnectionState,
  type HistoryPage,
  type MessageFrame,
  type Position,
  type PresenceUser,
  type PublishResult,
} from "../../src/roomcast/static/roomcast.js";
import {
  RoomcastProvider,
  useRoom,
  useRoomcast,
  type RoomMessage,
  type RoomStatus,
} from "../../src/roomcast/static/roomcast-react.js";

interface Task {
  task_id: number;
  title: string;
}

const states: ConnectionState[] = [CONNECTING, CONNECTED, RECONNECTING, DISCONNECTED];
const stops: readonly number[] = STOP_CODES;
const dead: 4008 = DEAD_LINK;

export async function everyMethod(): Promise<void> {
  const client = new RoomcastClient("ws://127.0.0.1:8000/ws", {
    token: async () => "a.jwt.token",
    initialDelay: 500,
    factor: 1.5,
    maxDelay: 30_000,
    jitter: 1,
    longDelay: 5000,
    connectTimeout: 10_000,
    requestTimeout: 10_000,
    publishTimeout: 60_000,
    pingInterval: 20_000,
    pingTimeout: 10_000,
    refreshBefore: 30_000,
    WebSocket,
    random: Math.random,
  });
  const same: RoomcastClient = new RoomcastDefault("/ws", { token: "a.jwt.token" });
  same.close();
  // @ts-expect-error a token is required
  new RoomcastClient("ws://127.0.0.1:8000/ws", {});

  const offs: Array<() => void> = [
    client.on("state", ({ state, previous, code, delay, attempt }) =>
      console.log(state, previous, code, delay, attempt)),
    client.on("connected", (c) => console.log(c.user_id, c.node, c.server_time)),
    client.on("disconnected", (d) => console.log(d.code, d.reason, d.reconnect)),
    client.on("message", (m) => console.log(m.room, m.offset, m.event, m.data, m.replayed)),
    client.on("joined", (j) => console.log(j.user_id, j.info)),
    client.on("left", (l) => console.log(l.user_id)),
    client.on("direct", (d) => console.log(d.event, d.data)),
    client.on("subscribed", (s) => console.log(s.room, s.ok, s.offset, s.epoch, s.error)),
    client.on("recovery", (r) => console.log(r.recovered, r.missed?.from, r.since.epoch)),
    client.on("reset", (r) => console.log(r.epoch, r.offset, r.missed, r.previous, r.epochChanged)),
    client.on("refreshed", (r) => console.log(r.expiresAt)),
    client.on("error", (e) => console.log(e.code, e.message)),
    client.on("frame", (f) => console.log(f.type)),
  ];
  // @ts-expect-error not an event of the client
  client.on("mesage", () => {});
  // @ts-expect-error a message's offset is a number
  client.on("message", (m) => m.offset.toUpperCase());

  client.connect();
  await client.whenConnected(5000);
  const state: ConnectionState = client.state;
  const entries = await client.subscribe(["project:12", "project:13"], {
    events: ["task.created"],
    where: { account_id: "123" },
    presence: true,
    since: { "project:12": { offset: 41, epoch: "e-9f2c" } },
  });
  const ok: boolean = entries["project:12"].ok;
  await client.subscribe("project:14");
  // @ts-expect-error since is per room
  await client.subscribe("project:15", { since: { offset: 1, epoch: "e" } });

  const task: Task = { task_id: 7, title: "write the docs" };
  const published: PublishResult = await client.publish("project:12", task, {
    event: "task.created",
    idempotencyKey: "key-1",
  });
  const at: number = published.offset;
  const duplicate: boolean = published.duplicate;
  // @ts-expect-error the room comes first
  await client.publish(task);

  const page: HistoryPage<Task> = await client.history<Task>("project:12", { since: 40, limit: 2 });
  const titles: string[] = page.messages.map((m: MessageFrame<Task>) => m.data.title);
  const users: PresenceUser[] = await client.presence("project:12");
  const rtt: number = await client.ping();
  const refreshed = await client.refresh();
  await client.refresh("another.jwt.token");
  const expires: string = refreshed.expires_at;
  const left = await client.unsubscribe(["project:13"]);
  const position: Position | undefined = client.positions.get("project:12");
  const rooms: string[] = [...client.subscriptions.keys()];

  const delay: number = backoffDelay(3, { initialDelay: 100, factor: 2, maxDelay: 1000, jitter: 0 }, () => 0.5);
  const exp: number | null = tokenExpiry("a.jwt.token");
  try {
    await client.publish("project:12", { text: "hi" });
  } catch (error) {
    if (error instanceof RoomcastError) console.log(error.code, error.message, error.frame?.code);
  }
  for (const off of offs) off();
  client.close("done");
  client.close();
  console.log(states, stops, dead, same, state, ok, at, duplicate, titles, users, rtt, expires,
              left.rooms, position, rooms, delay, exp, client.connection?.connection_id, client.token);
}

function Status() {
  const { state, connected, code, reason, delay, attempt, connection, client } = useRoomcast();
  return (
    <p data-state={state}>
      {connected ? `connected as ${connection?.user_id}` : state}
      {code !== null && ` (close ${code}${reason ? `: ${reason}` : ""})`}
      {delay !== null && ` next try in ${delay} ms (attempt ${attempt})`}
      {client ? "" : " no client yet"}
    </p>
  );
}

function Tasks({ project }: { project: number }) {
  const [saved] = useState<Position | null>(null);
  const { messages, status, position, error, recovery, reset } = useRoom<Task>(`project:${project}`, {
    since: saved,
    events: ["task.created"],
    where: { account_id: "123" },
    history: 20,
    limit: 500,
  });
  const current: RoomStatus = status;
  const first: RoomMessage<Task> | undefined = messages[0];
  // @ts-expect-error the data is a Task
  const wrong: string = first?.data.task_id;
  return (
    <section data-status={current}>
      {error && <p>{error.message}</p>}
      {recovery && !recovery.recovered && <p>resumed without a full replay</p>}
      {reset && <p>the stream was replaced: {reset.epoch}</p>}
      <ol>
        {messages.map((m) => (
          <li key={m.key}>{m.epoch} #{m.offset} {m.data.title} {m.sender ?? "server"}</li>
        ))}
      </ol>
      <small>{position ? `${position.epoch}:${position.offset}` : "-"} {wrong}</small>
    </section>
  );
}

function Nothing() {
  const idle = useRoom(null);
  const plain = useRoom("lobby");
  return <p>{idle.status} {plain.messages.length}</p>;
}

export function App({ token }: { token: () => Promise<string> }) {
  const shared = new RoomcastClient("ws://127.0.0.1:8000/ws", { token });
  return (
    <StrictMode>
      <RoomcastProvider url="ws://127.0.0.1:8000/ws" options={{ token, initialDelay: 1000 }}>
        <Status />
        <Tasks project={12} />
        <Nothing />
      </RoomcastProvider>
      <RoomcastProvider client={shared}>
        <Status />
      </RoomcastProvider>
      {/* @ts-expect-error a provider needs a client, or a url with options */}
      <RoomcastProvider url="ws://127.0.0.1:8000/ws" />
    </StrictMode>
  );
}
