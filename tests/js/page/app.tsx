// The React test page (tests/browser/test_react.py): a status line from useRoomcast() and
// three rooms from useRoom(), under StrictMode. Query parameters: url, token, all, filtered,
// since_room, since_offset, since_epoch, initialDelay, and twin (a second list of `all`;
// buttons unmount either list). window.hold() makes the token
// function wait (no connection attempt can finish) until window.release(); window.client
// is the provider's client.
import { StrictMode, useEffect, useState } from "react";
import { createRoot } from "react-dom/client";

import type { Position, RoomcastClient } from "../../../src/roomcast/static/roomcast.js";
import {
  RoomcastProvider,
  useRoom,
  useRoomcast,
  type UseRoomOptions,
} from "../../../src/roomcast/static/roomcast-react.js";

declare global {
  interface Window {
    states: string[];
    client: RoomcastClient | null;
    hold: () => void;
    release: () => void;
  }
}

const params = new URLSearchParams(location.search);
const param = (name: string): string => params.get(name) ?? "";
let gate: Promise<void> = Promise.resolve();
let open = (): void => {};
window.states = [];
window.hold = () => {
  gate = new Promise((resolve) => {
    open = resolve;
  });
};
window.release = () => open();

async function token(): Promise<string> {
  await gate;
  return param("token");
}

function Status() {
  const { state, code, attempt, client } = useRoomcast();
  useEffect(() => {
    window.states.push(state);
  }, [state]);
  useEffect(() => {
    window.client = client;
  }, [client]);
  return (
    <p data-testid="status" data-state={state} data-code={code ?? ""}>
      {state}
      {attempt !== null && ` (attempt ${attempt})`}
    </p>
  );
}

function Feed({ name, room, options }: { name: string; room: string; options: UseRoomOptions }) {
  const view = useRoom<Record<string, unknown>>(room || null, options);
  return (
    <section data-testid={name} data-status={view.status} data-epoch={view.position?.epoch ?? ""}>
      <h2>{room}</h2>
      <ol>
        {view.messages.map((m) => (
          <li key={m.key} data-testid="message" data-offset={m.offset} data-epoch={m.epoch ?? ""}>
            {JSON.stringify(m.data)}
          </li>
        ))}
      </ol>
      {view.recovery && (
        <p data-testid="recovery" data-recovered={String(view.recovery.recovered)}
           data-epoch-changed={String(view.recovery.epochChanged)}>
          recovered: {String(view.recovery.recovered)}
        </p>
      )}
      {view.error && <p data-testid="error">{view.error.message}</p>}
    </section>
  );
}

function App() {
  const since: Position | null = param("since_epoch")
    ? { offset: Number(param("since_offset")), epoch: param("since_epoch") }
    : null;
  const [shown, setShown] = useState({ all: true, twin: param("twin") !== "" });
  return (
    <RoomcastProvider url={param("url")}
                      options={{ token, initialDelay: Number(param("initialDelay") || 300) }}>
      <Status />
      <button data-testid="hide-all" onClick={() => setShown({ ...shown, all: false })}>hide</button>
      <button data-testid="hide-twin" onClick={() => setShown({ ...shown, twin: false })}>hide</button>
      {shown.all && <Feed name="all" room={param("all")} options={{ history: 10 }} />}
      {shown.twin && <Feed name="twin" room={param("all")} options={{ history: 10 }} />}
      <Feed name="filtered" room={param("filtered")}
            options={{ events: ["keep"], where: { kind: "a" }, history: 10 }} />
      <Feed name="since" room={param("since_room")} options={{ since }} />
    </RoomcastProvider>
  );
}

const root = document.getElementById("root");
if (!root) throw new Error("the page has no #root element");
createRoot(root).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
