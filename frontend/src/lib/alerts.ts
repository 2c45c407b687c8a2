// Alerts: a deduplicating store and the live SSE connection that feeds it.
//
// First paint comes from GET /alerts; the stream then opens with `last_event_id` set to the newest
// stream id the store holds, so nothing between the snapshot and the stream is missed. Every
// reconnect (network error, server restart, or the server's `event: reconnect`) reopens with the
// newest id seen, so the server replays exactly what this page missed; the store drops anything it
// already has, so an overlapping replay shows no duplicates.
//
// EventSource cannot send headers, and a token in a URL ends up in proxy and browser logs, so a signed-in
// page first exchanges its token for a single-use, short-lived stream ticket (POST /alerts/ticket) and
// opens the stream with `ticket=`. A ticket is fetched anew for every connection (it works once), so a
// sign-in or sign-out takes effect on the next one.
import type { AlertEvent, Severity } from "./types";

export const SEVERITIES: Severity[] = ["info", "warning", "error", "critical"];

export function severityRank(s: string): number {
  const i = SEVERITIES.indexOf(s as Severity);
  return i < 0 ? 0 : i;
}

const STREAM_ID = /^(\d+)-(\d+)$/;

/** Is this a Redis stream id ("<ms>-<seq>")? */
export function isStreamId(id: unknown): id is string {
  return typeof id === "string" && STREAM_ID.test(id);
}

/** Order two Redis stream ids; `null` when either is not one. */
export function compareStreamIds(a: string, b: string): number | null {
  const ma = STREAM_ID.exec(a);
  const mb = STREAM_ID.exec(b);
  if (!ma || !mb) return null;
  const ams = BigInt(ma[1]), bms = BigInt(mb[1]);
  if (ams !== bms) return ams < bms ? -1 : 1;
  const as = BigInt(ma[2]), bs = BigInt(mb[2]);
  return as === bs ? 0 : as < bs ? -1 : 1;
}

/** Older first: by stream id when both ids are stream ids, else by timestamp, then by id. */
export function compareAlerts(a: AlertEvent, b: AlertEvent): number {
  const byId = compareStreamIds(a.id, b.id);
  if (byId !== null) return byId;
  const ta = Date.parse(a.ts), tb = Date.parse(b.ts);
  if (!Number.isNaN(ta) && !Number.isNaN(tb) && ta !== tb) return ta - tb;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

/** Loose check of a decoded alert: enough fields to show it. */
export function parseAlert(raw: unknown, fallbackId?: string): AlertEvent | null {
  if (!raw || typeof raw !== "object") return null;
  const a = raw as Partial<AlertEvent>;
  const id = typeof a.id === "string" && a.id ? a.id : fallbackId;
  if (!id || typeof a.type !== "string") return null;
  return {
    ...a,
    id,
    type: a.type,
    severity: SEVERITIES.includes(a.severity as Severity) ? (a.severity as Severity) : "info",
    title: typeof a.title === "string" && a.title ? a.title : a.type,
    ts: typeof a.ts === "string" ? a.ts : new Date().toISOString(),
  } as AlertEvent;
}

type Listener = (alerts: readonly AlertEvent[]) => void;

export class AlertStore {
  private readonly byId = new Map<string, AlertEvent>();
  private sorted: AlertEvent[] = [];
  private readonly listeners = new Set<Listener>();
  private newest: string | null = null;

  constructor(readonly capacity = 500) {}

  /** Alerts newest first. */
  get list(): readonly AlertEvent[] {
    return this.sorted;
  }

  get size(): number {
    return this.sorted.length;
  }

  has(id: string): boolean {
    return this.byId.has(id);
  }

  /** The newest Redis stream id seen (from alert ids or SSE `id:` lines): where a replay starts. */
  get lastStreamId(): string | null {
    return this.newest;
  }

  noteStreamId(id: string | null | undefined): void {
    if (!isStreamId(id)) return;
    if (this.newest === null || (compareStreamIds(id, this.newest) ?? 0) > 0) this.newest = id;
  }

  /** Add alerts; returns those that were new (already-known ids are ignored). */
  add(...alerts: AlertEvent[]): AlertEvent[] {
    const added: AlertEvent[] = [];
    for (const a of alerts) {
      this.noteStreamId(a.id);
      if (this.byId.has(a.id)) continue;
      this.byId.set(a.id, a);
      added.push(a);
    }
    if (added.length) {
      this.sorted = [...this.byId.values()].sort((x, y) => compareAlerts(y, x));
      for (const dropped of this.sorted.splice(this.capacity)) this.byId.delete(dropped.id);
      this.emit();
    }
    return added;
  }

  clear(): void {
    this.byId.clear();
    this.sorted = [];
    this.emit();
  }

  subscribe(fn: Listener): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private emit(): void {
    for (const fn of this.listeners) fn(this.sorted);
  }
}

export type ConnectionState = "connecting" | "live" | "reconnecting" | "stopped";

/** The parts of EventSource this module uses (so tests can pass a fake). */
export interface EventSourceLike {
  readonly readyState: number;
  onopen: ((ev: Event) => unknown) | null;
  onerror: ((ev: Event) => unknown) | null;
  onmessage: ((ev: MessageEvent) => unknown) | null;
  addEventListener(type: string, listener: (ev: MessageEvent) => void): void;
  close(): void;
}

export interface AlertStreamOptions {
  url: string;
  store: AlertStore;
  /** Called for every alert that was new to the store, in arrival order. */
  onAlert?: (alert: AlertEvent) => void;
  onState?: (state: ConnectionState, retryInMs?: number) => void;
  createEventSource?: (url: string) => EventSourceLike;
  /** A fresh single-use stream ticket for each connection (POST /alerts/ticket); null: connect without one. */
  ticket?: () => Promise<string | null>;
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  setTimer?: (fn: () => void, ms: number) => unknown;
  clearTimer?: (handle: unknown) => void;
}

export class AlertStream {
  private es: EventSourceLike | null = null;
  private timer: unknown = null;
  private backoff: number;
  private stateValue: ConnectionState = "stopped";
  /** Bumped whenever a connection attempt is abandoned, so a ticket that arrives late opens nothing. */
  private attempt = 0;
  private readonly o: Required<Omit<AlertStreamOptions, "onAlert" | "onState" | "ticket">> &
    Pick<AlertStreamOptions, "onAlert" | "onState" | "ticket">;

  constructor(opts: AlertStreamOptions) {
    this.o = {
      createEventSource: (url) => new EventSource(url) as EventSourceLike,
      initialBackoffMs: 500,
      maxBackoffMs: 5000,
      setTimer: (fn, ms) => setTimeout(fn, ms),
      clearTimer: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
      ...opts,
    };
    this.backoff = this.o.initialBackoffMs;
  }

  get state(): ConnectionState {
    return this.stateValue;
  }

  /** The URL of a connection: resumes after the newest stream id seen, with the stream ticket if any. */
  connectUrl(ticket: string | null = null): string {
    const params: string[] = [];
    const last = this.o.store.lastStreamId;
    if (last) params.push(`last_event_id=${encodeURIComponent(last)}`);
    if (ticket) params.push(`ticket=${encodeURIComponent(ticket)}`);
    if (!params.length) return this.o.url;
    const sep = this.o.url.includes("?") ? "&" : "?";
    return `${this.o.url}${sep}${params.join("&")}`;
  }

  start(): void {
    if (this.stateValue !== "stopped") return;
    this.connect("connecting");
  }

  stop(): void {
    this.cancelTimer();
    this.closeSource();
    this.setState("stopped");
  }

  /** Start afresh whatever the state (e.g. after a sign-in: the next URL carries the new token). */
  restart(): void {
    this.cancelTimer();
    this.closeSource();
    this.backoff = this.o.initialBackoffMs;
    this.connect("connecting");
  }

  /** Drop the connection and open a new one at once (replaying what was missed). */
  reconnectNow(): void {
    if (this.stateValue === "stopped") return;
    this.cancelTimer();
    this.closeSource();
    this.connect("reconnecting");
  }

  private connect(state: ConnectionState): void {
    this.setState(state);
    const attempt = ++this.attempt;
    if (!this.o.ticket) {
      this.open(null);
      return;
    }
    this.o.ticket().then(
      (ticket) => {
        if (attempt === this.attempt) this.open(ticket);
      },
      () => {
        if (attempt === this.attempt) this.scheduleReconnect(); // no ticket (offline, signed out): retry later
      },
    );
  }

  private open(ticket: string | null): void {
    const es = this.o.createEventSource(this.connectUrl(ticket));
    this.es = es;
    const onEvent = (ev: MessageEvent) => this.handle(ev);
    es.addEventListener("alert", onEvent);
    es.onmessage = onEvent; // an unnamed event carrying an alert
    es.addEventListener("reconnect", () => this.reconnectNow());
    es.onopen = () => {
      if (this.es !== es) return;
      this.backoff = this.o.initialBackoffMs;
      this.setState("live");
    };
    es.onerror = () => {
      if (this.es !== es) return;
      // We reconnect ourselves (not EventSource's built-in retry) so the URL always carries the
      // newest id seen, whether or not a proxy forwards the Last-Event-ID header.
      this.closeSource();
      this.scheduleReconnect();
    };
  }

  private handle(ev: MessageEvent): void {
    let raw: unknown;
    try {
      raw = JSON.parse(String(ev.data));
    } catch {
      return; // a heartbeat or something that is not an alert
    }
    const alert = parseAlert(raw, ev.lastEventId || undefined);
    this.o.store.noteStreamId(ev.lastEventId);
    if (!alert) return;
    for (const a of this.o.store.add(alert)) this.o.onAlert?.(a);
  }

  private scheduleReconnect(): void {
    const wait = this.backoff;
    this.backoff = Math.min(this.backoff * 2, this.o.maxBackoffMs);
    this.setState("reconnecting", wait);
    this.timer = this.o.setTimer(() => {
      this.timer = null;
      this.connect("reconnecting");
    }, wait);
  }

  private closeSource(): void {
    this.attempt++; // a ticket still on its way is for a connection nobody wants any more
    if (this.es) {
      this.es.onopen = this.es.onerror = this.es.onmessage = null;
      this.es.close();
      this.es = null;
    }
  }

  private cancelTimer(): void {
    if (this.timer !== null) {
      this.o.clearTimer(this.timer);
      this.timer = null;
    }
  }

  private setState(s: ConnectionState, retryInMs?: number): void {
    this.stateValue = s;
    this.o.onState?.(s, retryInMs);
  }
}
