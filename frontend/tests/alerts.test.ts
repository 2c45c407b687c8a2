import { describe, expect, it } from "vitest";
import { AlertStore, AlertStream, compareStreamIds, parseAlert, type EventSourceLike } from "../src/lib/alerts";
import type { AlertEvent } from "../src/lib/types";

function alert(id: string, extra: Partial<AlertEvent> = {}): AlertEvent {
  return { id, type: "training.finished", severity: "info", title: `alert ${id}`, ts: "2025-01-01T00:00:00Z", ...extra };
}

describe("stream ids", () => {
  it("orders by milliseconds then sequence, numerically", () => {
    expect(compareStreamIds("1700000000000-0", "1700000000000-1")).toBe(-1);
    expect(compareStreamIds("1700000000001-0", "1700000000000-9")).toBe(1);
    expect(compareStreamIds("99-10", "99-9")).toBe(1); // not a string comparison
    expect(compareStreamIds("5-5", "5-5")).toBe(0);
    expect(compareStreamIds("abc", "5-5")).toBeNull();
  });
});

describe("AlertStore", () => {
  it("keeps alerts newest first and drops duplicates", () => {
    const s = new AlertStore();
    expect(s.add(alert("2-0"), alert("1-0")).map((a) => a.id)).toEqual(["2-0", "1-0"]);
    expect(s.add(alert("1-0"), alert("3-0"), alert("2-0")).map((a) => a.id)).toEqual(["3-0"]);
    expect(s.list.map((a) => a.id)).toEqual(["3-0", "2-0", "1-0"]);
    expect(s.lastStreamId).toBe("3-0");
  });

  it("falls back to timestamps for ids that are not stream ids", () => {
    const s = new AlertStore();
    s.add(alert("b", { ts: "2025-01-01T00:00:02Z" }), alert("a", { ts: "2025-01-01T00:00:03Z" }), alert("c", { ts: "2025-01-01T00:00:01Z" }));
    expect(s.list.map((a) => a.id)).toEqual(["a", "b", "c"]);
    expect(s.lastStreamId).toBeNull();
  });

  it("caps its size, forgetting the oldest", () => {
    const s = new AlertStore(3);
    s.add(...[1, 2, 3, 4, 5].map((i) => alert(`${i}-0`)));
    expect(s.list.map((a) => a.id)).toEqual(["5-0", "4-0", "3-0"]);
    expect(s.has("1-0")).toBe(false);
  });

  it("notifies subscribers only when something changed", () => {
    const s = new AlertStore();
    let calls = 0;
    s.subscribe(() => calls++);
    s.add(alert("1-0"));
    s.add(alert("1-0"));
    expect(calls).toBe(1);
  });

  it("never moves the resume point backwards", () => {
    const s = new AlertStore();
    s.noteStreamId("10-0");
    s.noteStreamId("9-5");
    s.noteStreamId("not-an-id");
    expect(s.lastStreamId).toBe("10-0");
  });
});

describe("parseAlert", () => {
  it("fills gaps and rejects non-alerts", () => {
    expect(parseAlert({ type: "x" }, "7-0")).toMatchObject({ id: "7-0", severity: "info", title: "x" });
    expect(parseAlert({ id: "1-0", type: "x", severity: "bogus" })?.severity).toBe("info");
    expect(parseAlert({ id: "1-0" })).toBeNull();
    expect(parseAlert("ping")).toBeNull();
  });
});

class FakeEventSource implements EventSourceLike {
  readyState = 0;
  onopen: ((ev: Event) => unknown) | null = null;
  onerror: ((ev: Event) => unknown) | null = null;
  onmessage: ((ev: MessageEvent) => unknown) | null = null;
  closed = false;
  private listeners = new Map<string, ((ev: MessageEvent) => void)[]>();
  constructor(readonly url: string) {}
  addEventListener(type: string, fn: (ev: MessageEvent) => void) {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), fn]);
  }
  close() {
    this.closed = true;
    this.readyState = 2;
  }
  open() {
    this.readyState = 1;
    this.onopen?.(new Event("open"));
  }
  emit(type: string, data: unknown, lastEventId = "") {
    const ev = new MessageEvent(type, { data: typeof data === "string" ? data : JSON.stringify(data), lastEventId });
    for (const fn of this.listeners.get(type) ?? []) fn(ev);
  }
  fail() {
    this.onerror?.(new Event("error"));
  }
}

function harness(store = new AlertStore()) {
  const sources: FakeEventSource[] = [];
  const timers: { fn: () => void; ms: number }[] = [];
  const states: string[] = [];
  const received: string[] = [];
  const stream = new AlertStream({
    url: "/api/webhook",
    store,
    createEventSource: (url) => {
      const es = new FakeEventSource(url);
      sources.push(es);
      return es;
    },
    onState: (s) => states.push(s),
    onAlert: (a) => received.push(a.id),
    setTimer: (fn, ms) => timers.push({ fn, ms }),
    clearTimer: () => timers.splice(0),
    initialBackoffMs: 100,
    maxBackoffMs: 400,
  });
  return { stream, store, sources, timers, states, received };
}

describe("AlertStream", () => {
  it("resumes after the first-paint snapshot", () => {
    const store = new AlertStore();
    store.add(alert("5-0"), alert("4-0"));
    const { stream, sources } = harness(store);
    stream.start();
    expect(sources[0].url).toBe("/api/webhook?last_event_id=5-0");
  });

  it("connects without an id when nothing is known", () => {
    const { stream, sources } = harness();
    stream.start();
    expect(sources[0].url).toBe("/api/webhook");
  });

  it("adds live alerts once and reports the connection state", () => {
    const { stream, sources, store, states, received } = harness();
    stream.start();
    sources[0].open();
    sources[0].emit("alert", alert("1-0"), "1-0");
    sources[0].emit("alert", alert("1-0"), "1-0");
    sources[0].emit("alert", "not json", "");
    expect(store.list.map((a) => a.id)).toEqual(["1-0"]);
    expect(received).toEqual(["1-0"]);
    expect(states).toEqual(["connecting", "live"]);
  });

  it("reconnects after an error with the newest id and backoff, replaying without duplicates", () => {
    const { stream, sources, timers, store, received, states } = harness();
    stream.start();
    sources[0].open();
    sources[0].emit("alert", alert("1-0"), "1-0");
    sources[0].emit("alert", alert("2-0"), "2-0");
    sources[0].fail();
    expect(sources[0].closed).toBe(true);
    expect(states.at(-1)).toBe("reconnecting");
    expect(timers[0].ms).toBe(100);
    timers.shift()!.fn();
    expect(sources[1].url).toBe("/api/webhook?last_event_id=2-0");
    sources[1].fail(); // still down: backoff doubles
    expect(timers[0].ms).toBe(200);
    timers.shift()!.fn();
    sources[2].open();
    // the server replays from 2-0; an overlapping replay must not duplicate
    for (const id of ["2-0", "3-0", "4-0"]) sources[2].emit("alert", alert(id), id);
    expect(store.list.map((a) => a.id)).toEqual(["4-0", "3-0", "2-0", "1-0"]);
    expect(received).toEqual(["1-0", "2-0", "3-0", "4-0"]);
    expect(states.at(-1)).toBe("live");
    sources[2].fail();
    expect(timers[0].ms).toBe(100); // backoff resets after a successful open
  });

  it("caps the backoff", () => {
    const { stream, sources, timers } = harness();
    stream.start();
    const waits: number[] = [];
    for (let i = 0; i < 5; i++) {
      sources.at(-1)!.fail();
      const t = timers.shift()!;
      waits.push(t.ms);
      t.fn();
    }
    expect(waits).toEqual([100, 200, 400, 400, 400]);
  });

  it("reconnects at once on the server's reconnect event", () => {
    const { stream, sources } = harness();
    stream.start();
    sources[0].open();
    sources[0].emit("alert", alert("9-1"), "9-1");
    sources[0].emit("reconnect", "");
    expect(sources[0].closed).toBe(true);
    expect(sources[1].url).toBe("/api/webhook?last_event_id=9-1");
  });

  it("uses the SSE id when the payload has none, and ignores a stale source", () => {
    const { stream, sources, store } = harness();
    stream.start();
    sources[0].emit("alert", { type: "schedule.fired", severity: "info", title: "t", ts: "2025-01-01T00:00:00Z" }, "12-3");
    expect(store.list[0].id).toBe("12-3");
    expect(store.lastStreamId).toBe("12-3");
    stream.stop();
    expect(sources[0].closed).toBe(true);
    expect(stream.state).toBe("stopped");
  });
});
