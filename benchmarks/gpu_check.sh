#!/usr/bin/env bash
# The GPU figures of issue 29 in one go, on a machine with a CUDA device (about 8 minutes on one
# H100/H200 with 16 cores): batched neural encoding against the one-by-one CPU encode, the
# two-stage neural decode through the loader (hyperprior and EnCodec; 4 and 12 workers, the main
# process at cores - W threads and at torch's default), and JPEG batches through nvJPEG against
# the CPU loader. Raw output goes to $OUT (or benchmarks/results/gpu-check-DATE/); copy the
# figures into benchmarks/README.md.
#
#     bash benchmarks/gpu_check.sh            # needs lossyds installed with [neural] and a CUDA torch
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks/results/gpu-check-$(date -u +%Y-%m-%d)}"
work="${TMPDIR:-/tmp}/lossyds-gpu-check"
mkdir -p "$out" "$work"
python - <<'PY' || { echo "gpu_check: this Python lacks a CUDA torch or lossyds[neural]" >&2; exit 2; }
import torch, lossyds, compressai, encodec  # noqa: F401
assert torch.cuda.is_available(), "no CUDA device"
print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, {__import__('os').cpu_count()} cores")
PY
status=0
run() {  # run NAME SECONDS COMMAND...: output to $out/NAME.txt, a failure noted and the rest still run
  local name="$1" limit="$2"
  shift 2
  echo "== $name: $*" | tee "$out/$name.txt"
  timeout "$limit" "$@" 2>&1 | tee -a "$out/$name.txt"
  local code="${PIPESTATUS[0]}"
  [ "$code" -eq 0 ] || { echo "== $name exited $code" | tee -a "$out/$name.txt"; status=1; }
}
run batched-encode 180 python benchmarks/batched_encode.py --device cuda --images 256 --clips 32 \
  --batch 1,8,32 --workers 8 --workdir "$work/encode" --json "$out/batched-encode.json"
# 768 images and 192 utterances: 24 and 6 batches of 32, so 12 workers all have whole batches to make
run device-decode 240 python benchmarks/device_decode.py --device cuda --images 768 --utterances 192 \
  --workers 4,12 --no-check --workdir "$work/decode" --json "$out/device-decode.json"
run device-decode-default-threads 120 python benchmarks/device_decode.py --device cuda --images 768 \
  --workers 4,12 --sections image --main-threads keep --no-check --workdir "$work/decode"
run nvjpeg-decode 90 python benchmarks/nvjpeg_decode.py --device cuda --images 2048 --batch 64,256 \
  --threads "$(nproc)" --workdir "$work/nvjpeg"
echo "gpu_check: raw output in $out (exit $status)"
exit "$status"
