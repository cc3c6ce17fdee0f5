/**
 * What the status-bar item says: pure, so the unit tests check it without VS Code.
 *
 * The server reports its own state with the `slm/status` notification (loading, indexing,
 * ready, error, no-model; generating in the future); the extension adds what only it knows:
 * starting/stopped (the process), disabled (`slm.enabled`), and generating (a request of
 * the inline provider in flight), and restarting/crashed (the process died on its own and is
 * restarted after a delay, or too often to restart again: restartPolicy.ts). `StatusModel`
 * holds that state; `status.ts` only draws it.
 */

export type ServerState =
  | 'starting'
  | 'loading'
  | 'indexing'
  | 'ready'
  | 'generating'
  | 'error'
  | 'no-model'
  | 'stopped'
  | 'restarting'
  | 'crashed';

export type ShownState = ServerState | 'disabled';

export interface StatusInput {
  /** The last state the server reported (or the client derived from the process). */
  serverState: ServerState;
  /** `detail` from the last notification (model name, error text...). */
  detail?: string;
  /** `slm.enabled`. */
  enabled: boolean;
  /** Inline requests in flight. */
  inFlight: number;
  /** Last completion latency in ms, from the server's notification or timed by the provider. */
  latencyMs?: number | null;
  /** Who answered the last completion the server computed: `local` or `remote` (a team server). */
  backend?: string;
  /** Why that backend answered (the router's reason, or the team server's failure). */
  backendReason?: string;
}

export interface StatusView {
  state: ShownState;
  text: string;
  tooltip: string;
  severity: 'normal' | 'warning' | 'error';
}

// `restarting` and `crashed` are the client's own: a server cannot report its own death.
const KNOWN: readonly string[] = ['starting', 'loading', 'indexing', 'ready', 'generating', 'error', 'no-model', 'stopped'];

/** A `state` from the wire as one we display; undefined for anything else (the caller keeps its current state). */
export function parseServerState(value: unknown): ServerState | undefined {
  return typeof value === 'string' && KNOWN.includes(value) ? (value as ServerState) : undefined;
}

/** `42 ms`, `1.3 s`; empty when unknown. */
export function formatLatency(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms) || ms < 0) {
    return '';
  }
  if (ms < 1000) {
    return `${Math.round(ms)} ms`;
  }
  return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;
}

/** Which state to show: disabled beats everything, the server's own states beat "generating". */
export function shownState(input: StatusInput): ShownState {
  if (!input.enabled) {
    return 'disabled';
  }
  if (input.serverState === 'ready' && input.inFlight > 0) {
    return 'generating';
  }
  return input.serverState;
}

const LABELS: Record<ShownState, { icon: string; label: string; tooltip: string; severity: StatusView['severity'] }> = {
  starting: { icon: '$(loading~spin)', label: 'starting', tooltip: 'Starting the slm-lsp server', severity: 'normal' },
  loading: { icon: '$(loading~spin)', label: 'loading model', tooltip: 'Loading the model', severity: 'normal' },
  indexing: { icon: '$(sync~spin)', label: 'indexing', tooltip: 'Indexing the workspace', severity: 'normal' },
  ready: { icon: '$(check)', label: 'ready', tooltip: 'Ready: completions appear as ghost text', severity: 'normal' },
  generating: { icon: '$(loading~spin)', label: 'generating', tooltip: 'Generating a completion', severity: 'normal' },
  error: { icon: '$(error)', label: 'error', tooltip: 'The server reported an error', severity: 'error' },
  'no-model': { icon: '$(warning)', label: 'no model', tooltip: 'No model: run "slm-lsp: Download a Model" or set slm.model.path', severity: 'warning' },
  stopped: { icon: '$(debug-stop)', label: 'stopped', tooltip: 'The slm-lsp server is not running', severity: 'error' },
  restarting: { icon: '$(sync~spin)', label: 'restarting', tooltip: 'The server stopped unexpectedly and is being restarted', severity: 'warning' },
  crashed: {
    icon: '$(error)',
    label: 'crashed',
    tooltip: 'The server crashed too often to be restarted: see the log, then "slm-lsp: Restart Server"',
    severity: 'error',
  },
  disabled: { icon: '$(circle-slash)', label: 'disabled', tooltip: 'Inline completions are off (slm.enabled)', severity: 'normal' },
};

/** The status-bar text (`$(check) slm 42 ms`), tooltip and colour for `input`. */
export function statusView(input: StatusInput): StatusView {
  const state = shownState(input);
  const { icon, label, tooltip, severity } = LABELS[state];
  const latency = formatLatency(input.latencyMs);
  // Ready shows the latency instead of the word: it is what the user watches; a cloud marks an
  // answer that came from the team server, so a user sees when code left the laptop.
  const remote = input.backend === 'remote';
  const words = state === 'ready' ? (latency || label) + (remote ? ' $(cloud)' : '') : label;
  const lines = [`slm-lsp: ${tooltip}`];
  if (input.detail) {
    lines.push(input.detail);
  }
  if (latency) {
    lines.push(`Last completion: ${latency}`);
  }
  if (input.backend === 'local' || remote) {
    const who = remote ? 'the team server' : 'the local model';
    lines.push(`Answered by ${who}${input.backendReason ? ` (${input.backendReason})` : ''}`);
  }
  lines.push('Click for status and commands');
  return { state, text: `${icon} slm ${words}`, tooltip: lines.join('\n'), severity };
}

/** What the server sends in `slm/status` (checked field by field: it comes from another process). */
export interface StatusNotification {
  state?: unknown;
  detail?: unknown;
  latencyMs?: unknown;
  backend?: unknown;
  backendReason?: unknown;
}

/**
 * The status-bar item's state: the server's last state, whether completions are on, inline
 * requests in flight, and the last latency; `view` is what to draw.
 */
export class StatusModel {
  private serverState: ServerState = 'stopped';
  private detail = '';
  private enabled = true;
  private inFlight = 0;
  private latencyMs: number | undefined;
  private backend: string | undefined;
  private backendReason = '';

  /** The state shown now (after `disabled` and `generating` are applied). */
  get state(): ShownState {
    return this.view.state;
  }

  /** The last state the server (or the client, for the process) reported. */
  get server(): ServerState {
    return this.serverState;
  }

  get view(): StatusView {
    return statusView({
      serverState: this.serverState,
      detail: this.detail,
      enabled: this.enabled,
      inFlight: this.inFlight,
      latencyMs: this.latencyMs,
      backend: this.backend,
      backendReason: this.backendReason,
    });
  }

  /** From the `slm/status` notification; an unknown state keeps the current one. */
  onNotification(params: StatusNotification): void {
    const state = parseServerState(params.state);
    if (state) {
      this.serverState = state;
    }
    this.detail = typeof params.detail === 'string' ? params.detail : '';
    if (typeof params.latencyMs === 'number' && Number.isFinite(params.latencyMs)) {
      this.latencyMs = params.latencyMs;
    }
    if (params.backend === 'local' || params.backend === 'remote') {
      this.backend = params.backend;
      this.backendReason = typeof params.backendReason === 'string' ? params.backendReason : '';
    }
  }

  setServerState(state: ServerState, detail = ''): void {
    this.serverState = state;
    this.detail = detail;
  }

  setEnabled(enabled: boolean): void {
    this.enabled = enabled;
  }

  /**
   * An inline request went out; call the returned function once it is answered, with its
   * latency (undefined when it was cancelled or failed). Extra calls are ignored.
   */
  requestStarted(): (latencyMs?: number) => void {
    this.inFlight += 1;
    let done = false;
    return (latencyMs?: number) => {
      if (done) {
        return;
      }
      done = true;
      this.inFlight = Math.max(0, this.inFlight - 1);
      if (latencyMs !== undefined) {
        this.latencyMs = latencyMs;
      }
    };
  }
}
