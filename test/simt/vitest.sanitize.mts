// vitest config for scripts/sanitize.mjs: the base config, plus LK_SANITIZER_PRELOAD as LD_PRELOAD
// of the test workers only (the processes that load the addon). The vitest parent process stays
// uninstrumented, so reports from its own native code (rolldown, v8 in the bundler) never appear.
import { defineConfig, mergeConfig } from 'vitest/config';

import base from '../../vitest.config.mts';

const preload = process.env['LK_SANITIZER_PRELOAD'] ?? '';
export default mergeConfig(base, defineConfig({
  test: { env: preload ? { LD_PRELOAD: preload } : {} },
}));
