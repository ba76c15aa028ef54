/** Types of binaries.mjs (plain JavaScript: scripts/test-install.mjs runs it without TypeScript). */
export function writeStaleCopy(from: string, to: string): string;
