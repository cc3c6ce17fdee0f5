import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Clock, CrashRestarter, crashMessage, DEFAULT_RESTART_POLICY, formatDelay, RestartDecision, RestartPolicy } from '../src/restartPolicy';

const SECOND = 1000;
const MINUTE = 60 * SECOND;

/** Starts the server at `start`, lets it crash `upMs` later, and returns the decision. */
function crashAfter(policy: RestartPolicy, start: number, upMs: number): RestartDecision {
  policy.started(start);
  return policy.crashed(start + upMs);
}

describe('RestartPolicy', () => {
  test('crashes in a row wait 0.5 s, 1 s, 2 s ... each restart twice as long', () => {
    const policy = new RestartPolicy({ maxCrashes: 100, windowMs: 10 * MINUTE });
    const delays: number[] = [];
    let now = 0;
    for (let i = 0; i < 5; i++) {
      const decision = crashAfter(policy, now, SECOND);
      assert.equal(decision.restart, true);
      if (decision.restart) {
        delays.push(decision.delayMs);
        now += SECOND + decision.delayMs;
      }
    }
    assert.deepEqual(delays, [500, 1000, 2000, 4000, 8000]);
  });

  test('the delay stops growing at 30 s', () => {
    // No window limit here: only the cap is under test.
    const policy = new RestartPolicy({ maxCrashes: 100 });
    let now = 0;
    const delays: number[] = [];
    for (let i = 0; i < 10; i++) {
      const decision = crashAfter(policy, now, SECOND);
      assert.ok(decision.restart);
      delays.push(decision.delayMs);
      now += SECOND + decision.delayMs;
    }
    assert.deepEqual(delays.slice(6), [30_000, 30_000, 30_000, 30_000]);
    assert.equal(Math.max(...delays), DEFAULT_RESTART_POLICY.maxDelayMs);
  });

  test('a server that stayed up a minute starts the series again at 0.5 s', () => {
    const policy = new RestartPolicy();
    let now = 0;
    for (const expected of [500, 1000, 2000]) {
      const decision = crashAfter(policy, now, SECOND);
      assert.deepEqual(decision.restart && decision.delayMs, expected);
      now += 10 * SECOND;
    }
    const afterStableRun = crashAfter(policy, now, MINUTE);
    assert.deepEqual(afterStableRun.restart && afterStableRun.delayMs, 500);
    // Just short of a minute is not stable: the series goes on from there.
    now += 2 * MINUTE;
    const next = crashAfter(policy, now, MINUTE - 1);
    assert.deepEqual(next.restart && next.delayMs, 1000);
  });

  test('gives up after more than 5 crashes within 3 minutes', () => {
    const policy = new RestartPolicy();
    let now = 0;
    const decisions: RestartDecision[] = [];
    for (let i = 0; i < 6; i++) {
      decisions.push(crashAfter(policy, now, SECOND));
      now += 2 * SECOND;
    }
    assert.deepEqual(
      decisions.map((d) => d.restart),
      [true, true, true, true, true, false],
    );
    assert.deepEqual(decisions.map((d) => d.crashes), [1, 2, 3, 4, 5, 6]);
    // Still given up on the next crash in the window (nothing restarted it but the user).
    assert.equal(policy.crashed(now).restart, false);
  });

  test('crashes older than the window are forgotten', () => {
    const policy = new RestartPolicy();
    let now = 0;
    for (let i = 0; i < 5; i++) {
      assert.equal(crashAfter(policy, now, SECOND).restart, true);
      now += 2 * SECOND;
    }
    // The sixth crash comes after the first five have left the 3-minute window.
    now += 3 * MINUTE;
    // It was up for a second only, so the delays go on doubling (the sixth in a row: 16 s).
    assert.deepEqual(crashAfter(policy, now, SECOND), { restart: true, delayMs: 16_000, crashes: 1 });
  });

  test("the user's restart forgets the crashes", () => {
    const policy = new RestartPolicy({ maxCrashes: 2 });
    assert.equal(crashAfter(policy, 0, 10).restart, true);
    assert.equal(crashAfter(policy, 100, 10).restart, true);
    assert.equal(crashAfter(policy, 200, 10).restart, false);
    policy.reset();
    assert.deepEqual(crashAfter(policy, 300, 10), { restart: true, delayMs: 500, crashes: 1 });
  });
});

describe('crashMessage', () => {
  test('a restart says when', () => {
    assert.equal(
      crashMessage({ restart: true, delayMs: 500, crashes: 1 }),
      'slm-lsp: the server stopped unexpectedly; restarting it in 0.5 s.',
    );
    assert.match(crashMessage({ restart: true, delayMs: 30_000, crashes: 5 }), /restarting it in 30 s\.$/);
  });

  test('giving up says how often, and what to do', () => {
    const message = crashMessage({ restart: false, crashes: 6 }, 3 * MINUTE);
    assert.match(message, /^slm-lsp: the server crashed 6 times in 3 min and will not be restarted\./);
    assert.match(message, /"slm-lsp: Show Log"/);
    assert.match(message, /"slm-lsp: Restart Server"/);
  });

  test('formatDelay', () => {
    assert.equal(formatDelay(500), '0.5 s');
    assert.equal(formatDelay(2000), '2 s');
    assert.equal(formatDelay(180_000), '3 min');
    assert.equal(formatDelay(90_000), '90 s');
  });
});

/** A clock whose time and timers move only when the test says so. */
class FakeClock implements Clock {
  time = 0;
  private timers = new Map<number, { at: number; callback: () => void }>();
  private nextId = 1;

  now(): number {
    return this.time;
  }

  setTimeout(callback: () => void, ms: number): unknown {
    const id = this.nextId++;
    this.timers.set(id, { at: this.time + ms, callback });
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.timers.delete(handle as number);
  }

  get pendingTimers(): number {
    return this.timers.size;
  }

  advance(ms: number): void {
    this.time += ms;
    for (const [id, timer] of [...this.timers].sort((a, b) => a[1].at - b[1].at)) {
      if (timer.at <= this.time) {
        this.timers.delete(id);
        timer.callback();
      }
    }
  }
}

function restarterWithLog(clock: FakeClock) {
  const events: string[] = [];
  const restarter = new CrashRestarter(
    {
      restart: () => {
        events.push(`restart at ${clock.now()}`);
        restarter.started();
      },
      restarting: (message, delayMs, crashes) => events.push(`restarting in ${delayMs} (crash ${crashes}): ${message}`),
      gaveUp: (message, crashes) => events.push(`gave up (crash ${crashes}): ${message}`),
    },
    new RestartPolicy(),
    clock,
  );
  return { restarter, events };
}

describe('CrashRestarter', () => {
  test('restarts after the delay, and tells the user before', () => {
    const clock = new FakeClock();
    const { restarter, events } = restarterWithLog(clock);
    restarter.started();
    clock.advance(5000);
    restarter.crashed();
    assert.equal(restarter.pending, true);
    assert.deepEqual(events, ['restarting in 500 (crash 1): slm-lsp: the server stopped unexpectedly; restarting it in 0.5 s.']);
    clock.advance(499);
    assert.equal(events.length, 1, 'not before the delay');
    clock.advance(1);
    assert.equal(events[1], 'restart at 5500');
    assert.equal(restarter.pending, false);
  });

  test('a crash loop backs off, then gives up with one message and no restart', () => {
    const clock = new FakeClock();
    const { restarter, events } = restarterWithLog(clock);
    restarter.started();
    for (let i = 0; i < 6; i++) {
      clock.advance(100); // each server dies 0.1 s after it started
      const decision = restarter.crashed();
      clock.advance(decision.restart ? decision.delayMs : 60_000); // the restart runs
    }
    const restarts = events.filter((e) => e.startsWith('restart at'));
    assert.equal(restarts.length, 5);
    const delays = events.filter((e) => e.startsWith('restarting in')).map((e) => Number(e.split(' ')[2]));
    assert.deepEqual(delays, [500, 1000, 2000, 4000, 8000]);
    const last = events[events.length - 1];
    assert.match(last, /^gave up \(crash 6\): slm-lsp: the server crashed 6 times in 3 min and will not be restarted/);
    assert.equal(restarter.pending, false);
    assert.equal(clock.pendingTimers, 0);
  });

  test('a stop cancels the pending restart; a user restart forgets the crashes', () => {
    const clock = new FakeClock();
    const { restarter, events } = restarterWithLog(clock);
    restarter.started();
    restarter.crashed();
    restarter.cancel();
    clock.advance(60_000);
    assert.deepEqual(events.filter((e) => e.startsWith('restart at')), []);
    assert.equal(clock.pendingTimers, 0);
    // Crash until it gives up, then the user restarts: a new series at 0.5 s.
    for (let i = 0; i < 5; i++) {
      restarter.started();
      restarter.crashed();
    }
    assert.match(events[events.length - 1], /^gave up/);
    restarter.reset();
    restarter.started();
    assert.equal(restarter.crashed().restart, true);
    assert.match(events[events.length - 1], /^restarting in 500 \(crash 1\)/);
  });

  test('a second crash before the restart replaces the pending one', () => {
    const clock = new FakeClock();
    const { restarter, events } = restarterWithLog(clock);
    restarter.started();
    restarter.crashed();
    restarter.crashed();
    assert.equal(clock.pendingTimers, 1);
    clock.advance(60_000);
    assert.equal(events.filter((e) => e.startsWith('restart at')).length, 1);
  });
});
