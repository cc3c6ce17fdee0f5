/**
 * When to restart a server that died on its own (a model that trips a llama.cpp assertion, a
 * segfault, the OOM killer), and what to tell the user. The Neovim plugin applies the same
 * policy (editors/nvim/lua/slm/restart.lua).
 *
 * - Each crash in a row waits twice as long before the restart: 0.5 s, 1 s, 2 s ... at most 30 s.
 * - A server that stayed up for a minute before it died starts the series again at 0.5 s.
 * - More than 5 crashes within 3 minutes: no more restarts; the user reads the log and restarts
 *   by hand (which starts a fresh series).
 *
 * `CrashRestarter` applies the policy: it schedules the restart and tells the user through the
 * hooks it is given (client.ts: messages and the status bar).
 *
 * Pure: no `vscode` import, the clock and timers are passed in; the Node tests drive them.
 */

export interface RestartPolicyOptions {
  /** Delay before the first restart of a series, in ms. */
  initialDelayMs: number;
  /** Longest delay, in ms. */
  maxDelayMs: number;
  /** A server up at least this long (ms) before it died starts a new series. */
  stableAfterMs: number;
  /** Crashes allowed within `windowMs`; one more and the server is not restarted. */
  maxCrashes: number;
  /** The window, in ms, over which crashes are counted. */
  windowMs: number;
}

export const DEFAULT_RESTART_POLICY: Readonly<RestartPolicyOptions> = {
  initialDelayMs: 500,
  maxDelayMs: 30_000,
  stableAfterMs: 60_000,
  maxCrashes: 5,
  windowMs: 3 * 60_000,
};

export type RestartDecision =
  /** Restart after `delayMs`; `crashes` is the count within the window, this one included. */
  | { restart: true; delayMs: number; crashes: number }
  /** Give up: `crashes` within the window. */
  | { restart: false; crashes: number };

export class RestartPolicy {
  private readonly options: RestartPolicyOptions;
  /** Times of the crashes within the window, oldest first. */
  private crashTimes: number[] = [];
  /** Crashes since the server last stayed up for `stableAfterMs`. */
  private inARow = 0;
  private startedAt: number | undefined;

  constructor(options: Partial<RestartPolicyOptions> = {}) {
    this.options = { ...DEFAULT_RESTART_POLICY, ...options };
  }

  /** The server process was (re)started at `now`. */
  started(now: number): void {
    this.startedAt = now;
  }

  /** The server died at `now` without being asked to stop: restart it, and when? */
  crashed(now: number): RestartDecision {
    const { initialDelayMs, maxDelayMs, stableAfterMs, maxCrashes, windowMs } = this.options;
    if (this.startedAt !== undefined && now - this.startedAt >= stableAfterMs) {
      this.inARow = 0;
    }
    this.startedAt = undefined;
    this.crashTimes = this.crashTimes.filter((t) => now - t < windowMs);
    this.crashTimes.push(now);
    const crashes = this.crashTimes.length;
    if (crashes > maxCrashes) {
      return { restart: false, crashes };
    }
    this.inARow += 1;
    const delayMs = Math.min(maxDelayMs, initialDelayMs * 2 ** (this.inARow - 1));
    return { restart: true, delayMs, crashes };
  }

  /** A restart the user asked for (or a new configuration): forget the crashes. */
  reset(): void {
    this.crashTimes = [];
    this.inARow = 0;
    this.startedAt = undefined;
  }

  /** The window crashes are counted over, for messages. */
  get windowMs(): number {
    return this.options.windowMs;
  }
}

/** `0.5 s`, `2 s`, `3 min`. */
export function formatDelay(ms: number): string {
  if (ms >= 60_000 && ms % 60_000 === 0) {
    return `${ms / 60_000} min`;
  }
  const seconds = ms / 1000;
  return `${Number.isInteger(seconds) ? seconds : seconds.toFixed(1)} s`;
}

/** What the user is told when the server dies: the restart to come, or what to do instead. */
export function crashMessage(decision: RestartDecision, windowMs: number = DEFAULT_RESTART_POLICY.windowMs): string {
  if (decision.restart) {
    return `slm-lsp: the server stopped unexpectedly; restarting it in ${formatDelay(decision.delayMs)}.`;
  }
  return (
    `slm-lsp: the server crashed ${decision.crashes} times in ${formatDelay(windowMs)} and will not be restarted. ` +
    'See "slm-lsp: Show Log" for the cause (a model or adapter llama.cpp cannot run?), then run "slm-lsp: Restart Server".'
  );
}

/** What `CrashRestarter` does with a decision: the language client and the UI behind it. */
export interface RestartHooks {
  /** Start the server again (the delay has passed). */
  restart(): void;
  /** The server died and will be restarted in `delayMs`; `message` is for the user. */
  restarting(message: string, delayMs: number, crashes: number): void;
  /** The server died once too often: not restarted; `message` says what to do. */
  gaveUp(message: string, crashes: number): void;
}

export interface Clock {
  now(): number;
  setTimeout(callback: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

const SYSTEM_CLOCK: Clock = {
  now: () => Date.now(),
  setTimeout: (callback, ms) => setTimeout(callback, ms),
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

/**
 * Restarts a server that died on its own, as `RestartPolicy` says; one restart pending at
 * most. `started()` on every start, `crashed()` when the connection closed without a stop,
 * `cancel()` on a stop the user asked for, `reset()` on a restart the user asked for.
 */
export class CrashRestarter {
  private timer: unknown;
  private pendingRestart = false;

  constructor(
    private readonly hooks: RestartHooks,
    private readonly policy: RestartPolicy = new RestartPolicy(),
    private readonly clock: Clock = SYSTEM_CLOCK,
  ) {}

  /** Whether a restart is waiting for its delay. */
  get pending(): boolean {
    return this.pendingRestart;
  }

  started(): void {
    this.cancel();
    this.policy.started(this.clock.now());
  }

  crashed(): RestartDecision {
    this.cancel();
    const decision = this.policy.crashed(this.clock.now());
    const message = crashMessage(decision, this.policy.windowMs);
    if (decision.restart) {
      this.pendingRestart = true;
      this.timer = this.clock.setTimeout(() => {
        this.pendingRestart = false;
        this.timer = undefined;
        this.hooks.restart();
      }, decision.delayMs);
      this.hooks.restarting(message, decision.delayMs, decision.crashes);
    } else {
      this.hooks.gaveUp(message, decision.crashes);
    }
    return decision;
  }

  /** Drop the pending restart, if any. */
  cancel(): void {
    if (this.pendingRestart) {
      this.clock.clearTimeout(this.timer);
      this.pendingRestart = false;
      this.timer = undefined;
    }
  }

  /** Drop the pending restart and forget the crashes. */
  reset(): void {
    this.cancel();
    this.policy.reset();
  }
}
