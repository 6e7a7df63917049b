// Types of wsgate-client (wsgate.js). See README.md for the semantics.

export type State = "connecting" | "open" | "reconnecting" | "closed";

/** Text payloads are strings; binary ones are bytes (and come back as Uint8Array). */
export type Payload = string | ArrayBuffer | ArrayBufferView;
export type Received = string | Uint8Array;

export type TokenReason = "initial" | "refresh" | "expired" | "refused" | "stale";
export type TokenSource = string | ((ctx: { reason: TokenReason }) => string | Promise<string>);

export type ProbeVerdict = "refused" | "unavailable" | "unreachable";

export interface ConnectOptions {
  /** A JWT, or a function returning one (called again to refresh, after 1008 "token expired", and once after a refusal). */
  token?: TokenSource;
  /** Where the token travels: `query` (`?token=`, the only way in a browser) or `header` (`Authorization: Bearer`). Default: header in jar mode, else query. */
  tokenIn?: "query" | "header";
  /** `browser`: the platform keeps cookies. `jar`: the client keeps them itself (GET /ws-session, `Cookie` on each upgrade). Default: browser where `document` or a worker scope exists, else jar. */
  cookies?: "browser" | "jar";
  onState?: (state: State, info: StateInfo) => void;
  onError?: (error: WsgateError) => void;
  onDirect?: (data: Received, meta: { binary: boolean }) => void;

  /** Full-jitter backoff: first envelope (ms, default 250). */
  minDelay?: number;
  /** Backoff cap (ms, default 10000). */
  maxDelay?: number;
  /** A connection open this long resets the backoff (ms, default 60000). */
  stableAfter?: number;
  /** After close 1001 or 1008 "token expired": reconnect within [0, drainDelay) ms (default 1000). */
  drainDelay?: number;
  /** Calls (publish/who/send) kept while not open (default 1000); beyond, the call rejects with code QUEUE_FULL. */
  maxQueue?: number;
  /** From the start of an attempt to `hello` (ms, default 15000). */
  helloTimeout?: number;
  /** Fraction of the token's lifetime (exp - iat) at which `auth <jwt>` is sent (default 0.8). */
  refreshAt?: number;
  /** Default "/ws-session" (on the gateway URL's origin). */
  sessionPath?: string;
  sessionUrl?: string;
  /** Default "/ws-health" (on the gateway URL's origin). */
  healthPath?: string;
  healthUrl?: string;
  /** How a failed upgrade (with a token) is classified: false = never a refusal; a function = yours; default: GET the health URL (200 = refused). */
  probe?: false | ((ctx: { url: string; healthUrl: string; fetch: typeof fetch | null }) => ProbeVerdict | Promise<ProbeVerdict>);

  // Injectable platform (tests, other runtimes).
  WebSocket?: new (url: string, init?: { headers: Record<string, string> }) => WebSocket;
  fetch?: typeof fetch;
  random?: () => number;
  now?: () => number;
  setTimeout?: (fn: () => void, ms: number) => unknown;
  clearTimeout?: (id: any) => void;
}

export interface StateInfo {
  previous: State | null;
  /** Close code / reason of the socket that ended (reconnecting, closed). */
  code?: number;
  reason?: string;
  /** Delay before the next attempt (ms). */
  delay?: number;
  /** open: whether the gateway resumed the session. */
  resumed?: boolean;
  peer?: string | null;
  node?: string | null;
  user?: string | null;
  /** closed by a terminal condition (REPLACED, REFUSED, TOKEN_EXPIRED, NO_WEBSOCKET). */
  error?: WsgateError;
}

export interface MessageMeta {
  topic: string;
  seq: number;
  binary: boolean;
}

export interface GapInfo {
  topic: string;
  /** First and last seq that will not be delivered. `from > to`: no message is known to be missing (a new session: presence may have changed). */
  from: number;
  to: number;
  /** history: the gateway's `gap` line; new-session: the session was lost and re-subscribed; reset: the topic's numbering restarted; missed: a jump in seq nobody announced. */
  reason: "history" | "new-session" | "reset" | "missed";
}

export interface PresenceEvent {
  topic: string;
  peer: string;
  user?: string;
}

export interface SubscribeOptions {
  onGap?: (gap: GapInfo) => void;
  onJoin?: (ev: PresenceEvent) => void;
  onLeave?: (ev: PresenceEvent) => void;
  /** The subscription ended on the gateway's side (FORBIDDEN, REVOKED). */
  onError?: (error: WsgateError) => void;
}

export interface Subscription {
  readonly topic: string;
  /** False after unsubscribe() or when the gateway refused/revoked it. */
  readonly active: boolean;
  /** Resolves with the topic's seq when the gateway confirmed (`ok sub`); rejects on FORBIDDEN/REVOKED/CLOSED/UNSUBSCRIBED. */
  readonly ready: Promise<number>;
  unsubscribe(): void;
}

export interface Members {
  topic: string;
  count: number;
  /** Empty above the gateway's presence cap (then `complete` is false). */
  members: { peer: string; user?: string }[];
  complete: boolean;
}

export interface Gateway {
  readonly state: State;
  /** Why the client stopped, when it stopped on its own. */
  readonly error: WsgateError | null;
  readonly peerId: string | null;
  readonly nodeId: string | null;
  readonly user: string | null;
  readonly resumed: boolean;
  readonly lastClose: { code: number; reason: string } | null;

  subscribe(topic: string, onMessage: (data: Received, meta: MessageMeta) => void, options?: SubscribeOptions): Subscription;
  /** Resolves with the message's seq. */
  publish(topic: string, data: Payload): Promise<number>;
  who(topic: string): Promise<Members>;
  /** Resolves with the backend's reply (DESIGN §12); binary in, binary out. */
  send(data: Payload): Promise<Received>;
  close(): void;

  on(event: "state", fn: (state: State, info: StateInfo) => void): () => void;
  on(event: "direct", fn: (data: Received, meta: { binary: boolean }) => void): () => void;
  on(event: "gap", fn: (gap: GapInfo) => void): () => void;
  on(event: "hello", fn: (info: { resumed: boolean; peer: string | null; node: string | null; user: string | null }) => void): () => void;
  on(event: "auth", fn: (info: { exp: number }) => void): () => void;
  on(event: "reconnect", fn: (info: { code?: number; reason?: string; delay: number; kind: "backoff" | "quick" }) => void): () => void;
  on(event: "error", fn: (error: WsgateError) => void): () => void;
  on(event: "unknown", fn: (line: string) => void): () => void;
  off(event: string, fn: (...args: any[]) => void): void;
}

export type ErrorCode =
  | "QUEUE_FULL"
  | "CONNECTION_LOST"
  | "CLOSED"
  | "UNSUBSCRIBED"
  | "FORBIDDEN"
  | "REVOKED"
  | "GATEWAY"
  | "UNSUPPORTED"
  | "REPLACED"
  | "TOKEN_EXPIRED"
  | "REFUSED"
  | "TOKEN"
  | "CONNECT"
  | "NO_WEBSOCKET"
  | "PROTOCOL"
  | "SEND"
  | "CALLBACK"
  | "INTERNAL";

export class WsgateError extends Error {
  code: ErrorCode;
  /** The numeric code of the gateway's `err` line. */
  status?: number;
  /** The text of the gateway's `err` line after the code. */
  text?: string;
  line?: string;
  closeCode?: number;
  closeReason?: string;
}

export const DEFAULTS: Readonly<{
  minDelay: number;
  maxDelay: number;
  stableAfter: number;
  drainDelay: number;
  maxQueue: number;
  helloTimeout: number;
  refreshAt: number;
  sessionPath: string;
  healthPath: string;
}>;

export function connect(url: string | URL, options?: ConnectOptions): Gateway;
export function backoffDelay(attempt: number, random?: () => number, minDelay?: number, maxDelay?: number): number;
export function decodeJwt(token: string): Record<string, unknown> | null;
export function isValidTopic(topic: string): boolean;
export default connect;
