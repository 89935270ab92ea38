#!/usr/bin/env bash
# The deeper GPU gate on a real NVIDIA host (issue 14): XIDs since boot, PCIe link, thermals,
# power, volatile ECC and an NCCL all-reduce over every GPU the host has, through
#   pyinfra @local roles/gpu_host/verify.py
# on a host with python3 + torch but no pyinfra/pydantic: those come from the carried deps
# payload (.whl/p1, see README.md), unpacked by `device.sh stash setup` into /tmp/site.
#
#   device call (carry .whl/p1):  bash bench/h200/gate.sh
#
# Writes to $OUT/gate/ (and one tarball $OUT/gate-<time>.tar.gz of it):
#   commands.txt            every command run, in order, with its exit code
#   probes/                 the probe outputs under their fixture names (gpu-check --save-dir),
#                           incl. kernel-log.txt and allreduce.json, plus gate.json / gate.txt
#   gate-standalone.txt     python3 -m r1deploy.gpu.gate --deep --allreduce yes (stdlib only)
#   gate-pyinfra.txt        the gate as a deploy, expecting what nvidia-smi lists (must pass)
#   gate-pyinfra-wrong.txt  the same expecting one GPU more (must fail)
#   facts.txt               pyinfra @local fact for the new facts (PciGpus, GpuVitals, KernelLog)
set -u
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"
OUT=${OUT:-/tmp/r1out}
RES=/tmp/r1res/gate
mkdir -p "$RES/probes" "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1  # shared hosts
log() { echo "[$(date -u +%H:%M:%S)] $*"; }
run() {  # run FILE CMD...: output to $RES/FILE, command and exit code to commands.txt
    local file=$1; shift
    log "$*"
    "$@" >"$RES/$file" 2>&1
    local rc=$?
    printf '%s\n  -> rc=%s (%s)\n' "$*" "$rc" "$file" >>"$RES/commands.txt"
    return $rc
}

# pyinfra + pydantic from the carried deps (vLLM's part is not needed here).
bash bench/h200/device.sh stash setup >"$RES/setup.txt" 2>&1
export PYTHONPATH="/tmp/site:$REPO"
export PATH="/tmp/site/bin:$PATH"
python3 -c "import pyinfra, pydantic" 2>>"$RES/setup.txt" || { log "pyinfra/pydantic missing: carry .whl/p1"; }

N=$(nvidia-smi --query-gpu=index --format=csv,noheader | wc -l)
MODEL=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
log "host lists $N x $MODEL"
DATA=(--data gpu_vendor=nvidia --data "gpu_expected_model=$MODEL" --data gpu_deep_gate=True
      --data gpu_allreduce=yes --data gpu_allreduce_python=python3)

run gate-standalone.txt python3 -m r1deploy.gpu.gate --expect-model "$MODEL" --expect-count "$N" --deep \
    --allreduce yes --allreduce-python python3 --interconnect nvswitch --save-dir "$RES/probes"
run gate-pyinfra.txt pyinfra -y @local roles/gpu_host/verify.py "${DATA[@]}" --data "gpu_expected_count=$N"
run gate-pyinfra-wrong.txt pyinfra -y @local roles/gpu_host/verify.py "${DATA[@]}" \
    --data "gpu_expected_count=$((N + 1))" --data gpu_allreduce=no
run facts.txt pyinfra -y @local fact roles.gpu_host.facts.PciGpus roles.gpu_host.facts.GpuVitals \
    roles.gpu_host.facts.KernelLog
{ uname -a; cat /etc/os-release; nvidia-smi; } >"$RES/host.txt" 2>&1
cat "$RES/commands.txt"
tar -C /tmp/r1res -czf "$OUT/gate-$(date -u +%Y%m%dT%H%M%S).tar.gz" gate
cp -r "$RES" "$OUT/" 2>/dev/null || true
