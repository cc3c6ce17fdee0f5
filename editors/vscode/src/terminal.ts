/**
 * Run an slm-lsp subcommand (`pull`, `finetune`) in a VS Code terminal: a pseudoterminal that
 * spawns the process itself (no shell, so no quoting), shows its output, stays open with the
 * exit code, and reports the exit code to the caller. Closing the terminal stops the process.
 */

import { ChildProcess, spawn } from 'node:child_process';
import * as vscode from 'vscode';
import { commandLine } from './settings';

/** Terminal text wants CRLF; progress bars' lone CR pass through. */
function crlf(text: string): string {
  return text.replace(/\r?\n/g, '\r\n');
}

export function runInTerminal(name: string, command: string, args: string[], cwd?: string): Promise<number | undefined> {
  return new Promise((resolve) => {
    const write = new vscode.EventEmitter<string>();
    let child: ChildProcess | undefined;
    let finished = false;
    const finish = (code: number | undefined) => {
      if (!finished) {
        finished = true;
        resolve(code);
      }
    };
    const pty: vscode.Pseudoterminal = {
      onDidWrite: write.event,
      open: () => {
        write.fire(`\x1b[1m$ ${commandLine(command, args)}\x1b[0m\r\n`);
        child = spawn(command, args, { cwd, env: { ...process.env, PYTHONUNBUFFERED: '1' }, windowsHide: true });
        child.stdout?.on('data', (data: Buffer) => write.fire(crlf(data.toString())));
        child.stderr?.on('data', (data: Buffer) => write.fire(crlf(data.toString())));
        child.on('error', (err) => {
          write.fire(crlf(`\n${err.message}\n`));
          finish(undefined);
        });
        child.on('close', (code) => {
          write.fire(crlf(`\n[exit code ${code ?? 'none'}: close this terminal when done]\n`));
          finish(code ?? undefined);
        });
      },
      close: () => {
        if (child && child.exitCode === null) {
          child.kill();
        }
        write.dispose();
        finish(undefined);
      },
    };
    vscode.window.createTerminal({ name, pty }).show();
  });
}
