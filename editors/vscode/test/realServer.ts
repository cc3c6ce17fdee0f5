/**
 * The real slm-lsp server for the wire tests: its command from the environment, the process
 * over stdio with a vscode-jsonrpc connection to it (the layer under vscode-languageclient), and
 * what it writes to stderr, for the failure messages.
 *
 *   SLM_LSP_SERVER      the server command: a JSON array, or words split on spaces
 *                       (e.g. `/work/main/.venv/bin/slm-lsp serve`)
 *   SLM_LSP_TINY_MODEL  a GGUF model (tests/conftest.py generates a tiny one)
 *
 * Without both, the wire tests are skipped. tests/e2e/test_vscode_client.py sets them.
 */

import { ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { createMessageConnection, MessageConnection, StreamMessageReader, StreamMessageWriter } from 'vscode-jsonrpc/node';

function serverCommand(): string[] | undefined {
  const value = process.env.SLM_LSP_SERVER?.trim();
  if (!value) {
    return undefined;
  }
  return value.startsWith('[') ? (JSON.parse(value) as string[]) : value.split(/\s+/);
}

export const command = serverCommand();
export const tinyModel = process.env.SLM_LSP_TINY_MODEL;
/** Why the wire tests are skipped; false when both variables are set. */
export const skip: string | false = !command ? 'SLM_LSP_SERVER is not set' : !tinyModel ? 'SLM_LSP_TINY_MODEL is not set' : false;

/** The server process and the connection to it. */
export class RealServer {
  readonly child: ChildProcessWithoutNullStreams;
  /** Not listening yet: the test adds its handlers, then calls `listen()`. */
  readonly connection: MessageConnection;
  /** What the server has written to stderr so far. */
  stderr = '';
  /** Its exit status once it has exited (null after a signal); undefined while it runs. */
  exitCode: number | null | undefined;

  /** Starts `argv` (the server command) in `cwd`, with this process's environment. */
  constructor(argv: string[], cwd: string) {
    const [file, ...args] = argv;
    this.child = spawn(file, args, { cwd, env: process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stderr.setEncoding('utf8');
    this.child.stderr.on('data', (chunk: string) => (this.stderr += chunk));
    this.child.on('exit', (code) => (this.exitCode = code));
    this.connection = createMessageConnection(new StreamMessageReader(this.child.stdout), new StreamMessageWriter(this.child.stdin));
  }

  /** `request`, or a failure with the server's stderr once `ms` pass without an answer. */
  within<T>(request: Promise<T>, what: string, ms: number): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer to ${what} in ${ms} ms\nserver stderr:\n${this.stderr.slice(-3000)}`)), ms);
    });
    return Promise.race([request, timeout]).finally(() => clearTimeout(timer));
  }

  /** Closes the connection, and kills the server unless it has exited. */
  stop(): void {
    this.connection.dispose();
    if (this.exitCode === undefined) {
      this.child.kill();
    }
  }
}
