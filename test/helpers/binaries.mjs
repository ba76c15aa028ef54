// Copies of native binaries for the loader tests (test/loader.test.ts, scripts/test-install.mjs).

import { readFileSync, writeFileSync } from 'node:fs';

/**
 * Copies the binary `from` to `to`, rewriting the version it reports (the "lora-kernels@<version>"
 * tag, see csrc/binding/addon.cpp) to a different version of the same length: a build for
 * another release, as a stale local build would be. Returns that version.
 */
export function writeStaleCopy(from, to) {
  const bytes = readFileSync(from);
  const tag = Buffer.from('lora-kernels@');
  const at = bytes.indexOf(tag);
  if (at < 0 || bytes.indexOf(tag, at + 1) >= 0) throw new Error(`${from}: expected exactly one lora-kernels@<version> tag`);
  const start = at + tag.length;
  let end = start;
  while (bytes[end] !== 0) end++;
  const version = bytes.subarray(start, end).toString('latin1');
  const stale = version.replace(/[0-9]/g, (d) => (d === '9' ? '8' : '9'));
  bytes.write(stale, start, 'latin1');
  writeFileSync(to, bytes, { mode: 0o755 });
  return stale;
}
