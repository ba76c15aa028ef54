/**
 * Runs a script in a fresh Node process against the built package (dist/, made by `pretest`),
 * with the normal binary: tests of loading and of the CUDA probe need a process of their own
 * (both happen once per process), and must not inherit the suite's LORA_KERNELS_ADDON or a
 * sanitizer preload meant for another build.
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

export const repoRoot = path.resolve(__dirname, '../..');

export interface ChildResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** The last stdout line parsed as JSON (the scripts print their findings there). */
  json<T>(): T;
}

export function runChild(script: string, opts: { env?: NodeJS.ProcessEnv; cwd?: string } = {}): ChildResult {
  const env: NodeJS.ProcessEnv = { ...process.env, ...opts.env };
  for (const name of ['LORA_KERNELS_ADDON', 'LD_PRELOAD', 'LK_TEST_DEVICES']) if (!(opts.env && name in opts.env)) delete env[name];
  const res = spawnSync(process.execPath, ['-e', script], { cwd: opts.cwd ?? repoRoot, env, encoding: 'utf8', timeout: 120_000 });
  return {
    status: res.status,
    signal: res.signal,
    stdout: res.stdout,
    stderr: res.stderr,
    json<T>() {
      const last = res.stdout.trim().split('\n').pop();
      if (!last) throw new Error(`the child printed nothing (status ${res.status}, signal ${res.signal}): ${res.stderr}`);
      return JSON.parse(last) as T;
    },
  };
}
