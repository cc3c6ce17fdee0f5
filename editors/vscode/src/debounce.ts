/**
 * Debounce for the inline completion provider. VS Code asks for inline completions on every
 * keystroke and cancels the previous request's token when the next one comes, so "wait
 * `ms`, give up if cancelled meanwhile" is a debounce: only the last keystroke of a burst
 * reaches the server.
 *
 * Pure: works with any token shaped like VS Code's / vscode-jsonrpc's CancellationToken.
 */

export interface CancellationLike {
  readonly isCancellationRequested: boolean;
  onCancellationRequested(listener: () => unknown): { dispose(): unknown };
}

/** Resolve `true` after `ms`, or `false` as soon as `token` is cancelled (at once if it already is). */
export function settle(ms: number, token?: CancellationLike): Promise<boolean> {
  if (token?.isCancellationRequested) {
    return Promise.resolve(false);
  }
  if (ms <= 0) {
    return Promise.resolve(true);
  }
  return new Promise<boolean>((resolve) => {
    let pending = true;
    const finish = (settled: boolean): void => {
      if (pending) {
        pending = false;
        clearTimeout(timer);
        subscription?.dispose();
        resolve(settled);
      }
    };
    const timer = setTimeout(() => finish(true), ms);
    // The token was not cancelled above, so its listener can only run after this returns, when
    // `subscription` is assigned.
    const subscription = token?.onCancellationRequested(() => finish(false));
  });
}

/** Milliseconds since `start` (from `performance.now()`), rounded for display and logs. */
export function elapsedMs(start: number, now: number = performance.now()): number {
  return Math.round((now - start) * 10) / 10;
}
