import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { formatLatency, parseServerState, shownState, StatusInput, StatusModel, statusView } from '../src/statusText';

const input = (overrides: Partial<StatusInput>): StatusInput => ({ serverState: 'ready', enabled: true, inFlight: 0, ...overrides });

describe('formatLatency', () => {
  test('milliseconds below a second, seconds above, nothing when unknown', () => {
    assert.equal(formatLatency(42.4), '42 ms');
    assert.equal(formatLatency(999.4), '999 ms');
    assert.equal(formatLatency(1340), '1.3 s');
    assert.equal(formatLatency(12_600), '13 s');
    assert.equal(formatLatency(0), '0 ms');
    for (const unknown of [undefined, null, -1, Number.NaN, Number.POSITIVE_INFINITY]) {
      assert.equal(formatLatency(unknown), '');
    }
  });
});

describe('parseServerState', () => {
  test('the states the server sends are kept, anything else is not', () => {
    for (const state of ['loading', 'indexing', 'ready', 'generating', 'error', 'no-model']) {
      assert.equal(parseServerState(state), state);
    }
    for (const junk of ['READY', 'done', '', 3, null, undefined, { state: 'ready' }]) {
      assert.equal(parseServerState(junk), undefined);
    }
  });
});

describe('statusView', () => {
  test('one text per state: loading model / indexing / ready with latency / generating / error', () => {
    assert.equal(statusView(input({ serverState: 'loading' })).text, '$(loading~spin) slm loading model');
    assert.equal(statusView(input({ serverState: 'indexing' })).text, '$(sync~spin) slm indexing');
    assert.equal(statusView(input({ serverState: 'ready' })).text, '$(check) slm ready');
    assert.equal(statusView(input({ serverState: 'ready', latencyMs: 87 })).text, '$(check) slm 87 ms');
    assert.equal(statusView(input({ serverState: 'ready', inFlight: 1, latencyMs: 87 })).text, '$(loading~spin) slm generating');
    assert.equal(statusView(input({ serverState: 'generating' })).text, '$(loading~spin) slm generating');
    assert.equal(statusView(input({ serverState: 'no-model' })).text, '$(warning) slm no model');
    const error = statusView(input({ serverState: 'error', detail: 'could not load /m.gguf' }));
    assert.equal(error.text, '$(error) slm error');
    assert.equal(error.severity, 'error');
    assert.match(error.tooltip, /could not load \/m\.gguf/);
  });

  test('disabled wins over every server state; generating only shows once the server is ready', () => {
    assert.equal(shownState(input({ serverState: 'error', enabled: false })), 'disabled');
    assert.equal(shownState(input({ inFlight: 3, enabled: false })), 'disabled');
    assert.equal(shownState(input({ serverState: 'loading', inFlight: 2 })), 'loading');
    assert.equal(shownState(input({ serverState: 'ready', inFlight: 2 })), 'generating');
  });

  test('the tooltip keeps the last latency in every state', () => {
    const view = statusView(input({ serverState: 'loading', latencyMs: 1500, detail: 'model.gguf' }));
    assert.deepEqual(view.tooltip.split('\n'), ['slm-lsp: Loading the model', 'model.gguf', 'Last completion: 1.5 s', 'Click for status and commands']);
    assert.equal(statusView(input({ serverState: 'no-model' })).severity, 'warning');
    assert.equal(statusView(input({ serverState: 'ready' })).severity, 'normal');
  });
});

describe('StatusModel', () => {
  test('starts stopped, follows the server through loading to ready', () => {
    const model = new StatusModel();
    assert.equal(model.state, 'stopped');
    model.setServerState('starting');
    assert.equal(model.state, 'starting');
    model.onNotification({ state: 'loading', detail: '/models/tiny.gguf', latencyMs: null });
    assert.equal(model.view.text, '$(loading~spin) slm loading model');
    assert.match(model.view.tooltip, /tiny\.gguf/);
    model.onNotification({ state: 'ready', detail: 'tiny', latencyMs: null });
    assert.equal(model.server, 'ready');
    assert.equal(model.view.text, '$(check) slm ready');
  });

  test('requests in flight show generating; the answer records its latency once', () => {
    const model = new StatusModel();
    model.onNotification({ state: 'ready' });
    const first = model.requestStarted();
    const second = model.requestStarted();
    assert.equal(model.state, 'generating');
    first(120);
    assert.equal(model.state, 'generating', 'the second request is still out');
    first(9999); // answered twice (cancelled and failed): ignored
    second(); // cancelled: no latency
    assert.equal(model.state, 'ready');
    assert.equal(model.view.text, '$(check) slm 120 ms');
  });

  test("the server's latency, malformed notifications and toggling", () => {
    const model = new StatusModel();
    model.onNotification({ state: 'ready', latencyMs: 33.3 });
    assert.equal(model.view.text, '$(check) slm 33 ms');
    model.onNotification({ state: 'exploded', detail: 7, latencyMs: 'slow' });
    assert.equal(model.server, 'ready', 'an unknown state keeps the current one');
    assert.equal(model.view.text, '$(check) slm 33 ms');
    model.setEnabled(false);
    assert.equal(model.view.text, '$(circle-slash) slm disabled');
    model.setEnabled(true);
    model.setServerState('error', 'the server exited');
    assert.equal(model.view.severity, 'error');
    assert.match(model.view.tooltip, /the server exited/);
  });

  test('who answered: a cloud for the team server, the reason in the tooltip', () => {
    const model = new StatusModel();
    model.onNotification({ state: 'ready', latencyMs: 80, backend: 'remote', backendReason: 'unsure (mean log-probability -0.41 < -0.2)' });
    assert.equal(model.view.text, '$(check) slm 80 ms $(cloud)');
    assert.match(model.view.tooltip, /Answered by the team server \(unsure/);
    model.onNotification({ state: 'ready', latencyMs: 30, backend: 'local', backendReason: 'confident' });
    assert.equal(model.view.text, '$(check) slm 30 ms');
    assert.match(model.view.tooltip, /Answered by the local model \(confident\)/);
    model.onNotification({ state: 'ready', backend: 42 });
    assert.match(model.view.tooltip, /the local model/, 'a malformed backend keeps the last one');
    model.onNotification({ state: 'ready', backend: null });
    assert.match(model.view.tooltip, /the local model/, 'no completion yet since a restart: the last one stays');
  });
});

describe('restarting and crashed', () => {
  test('the client shows a server that died: restarting (warning), crashed (error)', () => {
    const model = new StatusModel();
    model.onNotification({ state: 'ready' });
    model.setServerState('restarting', 'slm-lsp: the server stopped unexpectedly; restarting it in 1 s.');
    assert.equal(model.view.text, '$(sync~spin) slm restarting');
    assert.equal(model.view.severity, 'warning');
    assert.match(model.view.tooltip, /restarting it in 1 s/);
    model.setServerState('crashed', 'crashed 6 times');
    assert.equal(model.view.text, '$(error) slm crashed');
    assert.equal(model.view.severity, 'error');
    assert.match(model.view.tooltip, /Restart Server/);
  });

  test('a server cannot report them over the wire', () => {
    assert.equal(parseServerState('restarting'), undefined);
    assert.equal(parseServerState('crashed'), undefined);
  });
});
