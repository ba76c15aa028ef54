#!/usr/bin/env bash
# Usage: check-cuda-archs.sh <addon.node>
# Fails unless the binary embeds real code (cubin) for every release arch and PTX for sm_120, as
# CMakeLists.txt's LK_CUDA_ARCHS=release asks. Needs cuobjdump (the cuda-cuobjdump package).
set -euo pipefail
addon=${1:?usage: check-cuda-archs.sh <addon.node>}
[ -f "$addon" ] || { echo "::error::$addon does not exist"; exit 1; }
elf=$(cuobjdump --list-elf "$addon")
ptx=$(cuobjdump --list-ptx "$addon")
printf '%s\n%s\n' "$elf" "$ptx"
missing=()
for a in 75 80 86 89 90a 100 120; do
  grep -Eq "sm_${a}([^0-9]|$)" <<<"$elf" || missing+=("sm_${a} cubin")
done
grep -Eq "(sm|compute)_120([^0-9]|$)" <<<"$ptx" || missing+=("sm_120 PTX")
if [ ${#missing[@]} -gt 0 ]; then
  echo "::error::$addon lacks: ${missing[*]}"
  exit 1
fi
echo "check-cuda-archs: $addon has sm_75 80 86 89 90a 100 120 and PTX for sm_120"
