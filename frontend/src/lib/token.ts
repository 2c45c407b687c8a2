// The API token this page sends (Authorization: Bearer …; the alert stream gets a single-use ticket for it).
// Kept in localStorage so a reload stays signed in; a blocked storage (private mode, a sandboxed
// frame) falls back to memory for this page's life.

export const TOKEN_KEY = "mlstack.token";

/** The part of Storage the token store uses (so tests can pass a Map-backed fake). */
export type StorageLike = Pick<Storage, "getItem" | "setItem" | "removeItem">;

function defaultStorage(): StorageLike | null {
  try {
    return typeof localStorage === "undefined" ? null : localStorage;
  } catch {
    return null; // a sandboxed document throws on the mere access
  }
}

export class TokenStore {
  private memory: string | null = null;
  private readonly storage: StorageLike | null;

  constructor(storage?: StorageLike | null, readonly key = TOKEN_KEY) {
    this.storage = storage === undefined ? defaultStorage() : storage;
  }

  /** The stored token, or null when there is none. */
  get(): string | null {
    try {
      const v = this.storage?.getItem(this.key);
      if (v != null) return v || null;
    } catch {
      // fall through to memory
    }
    return this.memory;
  }

  set(token: string): void {
    const t = token.trim();
    if (!t) return this.clear();
    this.memory = t;
    try {
      this.storage?.setItem(this.key, t);
    } catch {
      // memory only
    }
  }

  clear(): void {
    this.memory = null;
    try {
      this.storage?.removeItem(this.key);
    } catch {
      // nothing stored
    }
  }
}

/** The page's token store (localStorage `mlstack.token`). */
export const tokens = new TokenStore();
