#!/usr/bin/env bash
# Stages run on the real H200 host (no network, no systemd, python3 3.12 + torch 2.11).
#
#   bash bench/h200/device.sh STAGE [STAGE...]
#
# stash   copy the payload pieces carried in .whl/pN/ to /tmp/r1pay (a warm machine keeps /tmp)
# setup   check and unpack the payload to /tmp/site (vLLM 0.26.0 + deps, pyinfra, pydantic)
# facts   record GPU outputs as fixtures; r1deploy gpu-check; pyinfra @local facts + gate
# serve   render the H200 node's config + env + unit, start vLLM the way the unit says, chat
# bench   vllm bench serve at concurrency 1/16/64/256: the planner's config, then vLLM defaults
# agree   planner agreement sweep (bench/h200/agree.py)
# restart cold vs warm restarts of the rendered unit, warm-up, first wave vs steady (bench/h200/restart.py;
#         R1_RESTART_RUNS, default cold-nowarmup,cold,warm,warm,warm; runs accumulate across calls)
#
# Results go to /tmp/r1res/<stage>/ and, at the end, one tarball per run into $OUT.
set -u
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"
PAY=/tmp/r1pay
SITE=/tmp/site
RES=/tmp/r1res
OUT=${OUT:-/tmp/r1out}
T0=$SECONDS
# Whole-command budget (the device tool stops a command at 600 s); stages check what is left.
BUDGET=${R1_BUDGET:-570}
mkdir -p "$PAY" "$RES" "$OUT"
export PYTHONUNBUFFERED=1
unset PYTHONDONTWRITEBYTECODE  # vLLM starts several times: let /tmp/site keep its .pyc
export PYTHONPATH="$SITE:$REPO"
export PATH="$SITE/bin:$PATH"
# NVLink multicast stays off on these shared hosts (also in every environment we start).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1

left() { echo $((BUDGET - (SECONDS - T0))); }
log() { echo "[$(date -u +%H:%M:%S) +$((SECONDS - T0))s] $*"; }

stage_stash() {
    local n=0
    for d in .whl/p*/; do
        [ -d "$d" ] || continue
        for f in "$d"*; do cp -f "$f" "$PAY/" && n=$((n + 1)); done
    done
    log "stash: copied $n piece(s); now in $PAY:"; ls -la "$PAY"
}

stage_setup() {
    mkdir -p "$RES/setup"
    if [ -f "$SITE/.complete" ]; then log "setup: $SITE already unpacked"; return 0; fi
    mkdir -p "$SITE"
    local unxz="xz -dc"
    command -v xz >/dev/null || unxz="python3 -c 'import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.stdin.buffer), sys.stdout.buffer, 1<<20)'"
    for part in deps vllm; do
        [ -f "$SITE/.$part" ] && continue
        # Unpack a part only when all its pieces are here and match the committed checksums.
        if ! (cd "$PAY" && grep " $part\.tar\.xz\." "$REPO/bench/h200/payload.sha256" | sha256sum -c --quiet -); then
            log "setup: $part incomplete"; continue
        fi
        log "setup: unpacking $part"
        cat "$PAY"/"$part".tar.xz.* | eval "$unxz" | tar -C "$SITE" -xf - && touch "$SITE/.$part"
    done
    if [ -f "$SITE/.deps" ] && [ -f "$SITE/.vllm" ]; then
        log "setup: byte-compiling /tmp/site"
        python3 -m compileall -q -j 0 "$SITE" >/dev/null 2>&1
        touch "$SITE/.complete"
    fi
    # The unit's ExecStart is /opt/r1deploy/vllm-<ver>/bin/vllm: the roles' venv. Here the same
    # vLLM lives in /tmp/site on the host's python3, so that path is a two-line launcher.
    mkdir -p /opt/r1deploy/vllm-0.26.0/bin "$SITE/bin"
    printf '#!/bin/sh\nPYTHONPATH=%s:%s${PYTHONPATH:+:$PYTHONPATH} exec python3 -m vllm.entrypoints.cli.main "$@"\n' \
        "$SITE" "$REPO" >/opt/r1deploy/vllm-0.26.0/bin/vllm
    printf '#!/bin/sh\nexec python3 -m r1deploy "$@"\n' >"$SITE/bin/r1deploy" 2>/dev/null || true
    printf '#!/bin/sh\nexec python3 -m pyinfra "$@"\n' >"$SITE/bin/pyinfra"
    printf '#!/bin/sh\nexec python3 -m vllm.entrypoints.cli.main "$@"\n' >"$SITE/bin/vllm"
    chmod +x /opt/r1deploy/vllm-0.26.0/bin/vllm "$SITE"/bin/*
    {
        python3 --version; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
        python3 - <<'EOF'
import importlib, importlib.metadata as md
for name in ["torch", "torchvision", "torchaudio", "transformers", "tokenizers", "huggingface-hub", "numpy",
             "triton", "numba", "vllm", "pydantic", "pyinfra", "fastapi", "starlette", "openai", "xgrammar",
             "typing_extensions", "anyio", "jinja2", "requests", "matplotlib"]:
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name} MISSING")
import torch
print("torch.cuda", torch.version.cuda, torch.cuda.is_available(), torch.cuda.get_device_name(0),
      round(torch.cuda.mem_get_info()[1] / 2**30, 3), "GiB total (torch)")
EOF
    } 2>&1 | tee "$RES/setup/versions.txt"
    log "setup: done"
}

stage_facts() {
    local d="$RES/facts" fx="$RES/facts/h200x1-ubuntu2404-run2"
    mkdir -p "$fx"
    log "facts: recording probe outputs"
    python3 - "$fx" <<'EOF'
import subprocess, sys
from pathlib import Path
from r1deploy.gpu import nvidia as gpu
out = Path(sys.argv[1])
for name, (fname, command) in gpu.PROBES.items():
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=120)
    (out / fname).write_text(done.stdout)
extra = {"nvidia-smi.txt": "nvidia-smi", "nvidia-smi-q.xml": "nvidia-smi -q -x",
         "os-release.txt": "cat /etc/os-release", "uname.txt": "uname -a",
         "query-gpu-full.csv": "nvidia-smi --query-gpu=index,uuid,name,pci.bus_id,memory.total,memory.used,driver_version,persistence_mode,compute_mode,temperature.gpu,power.limit,clocks.max.sm,ecc.mode.current,mig.mode.current --format=csv",
         "torch.txt": "python3 -c \"import torch;p=torch.cuda.get_device_properties(0);print(torch.__version__, torch.version.cuda, p.name, p.total_memory, p.multi_processor_count, torch.cuda.mem_get_info())\""}
for fname, command in extra.items():
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=120)
    (out / fname).write_text(done.stdout + (done.stderr if done.returncode else ""))
print("recorded:", ", ".join(sorted(p.name for p in out.iterdir())))
EOF
    log "facts: r1deploy gpu-check (table, json)"
    { echo "\$ python3 -m r1deploy gpu-check --inventory bench/h200/h200_node.py --host @local"
      python3 -m r1deploy gpu-check --inventory bench/h200/h200_node.py --host @local; echo "exit=$?"; } \
        >"$d/gpu-check.txt" 2>&1
    python3 -m r1deploy gpu-check --inventory bench/h200/h200_node.py --host @local --json >"$d/gpu-check.json" 2>"$d/gpu-check.json.err"
    echo "exit=$?" >>"$d/gpu-check.json.err"
    { echo "\$ python3 -m r1deploy gpu-check --expect-model H200 --expect-count 2 (must fail: one GPU here)"
      python3 -m r1deploy gpu-check --expect-model H200 --expect-count 2; echo "exit=$?"; } >"$d/gpu-check-expect2.txt" 2>&1
    cat "$d/gpu-check.txt"
    log "facts: pyinfra @local facts"
    local facts="roles.gpu_host.facts.Gpus roles.gpu_host.facts.LoadedDriver roles.gpu_host.facts.GpuHealth roles.gpu_host.facts.GpuTopology roles.gpu_host.facts.NvLinkStatus roles.gpu_host.facts.NvSwitches roles.gpu_host.facts.FabricManagerState roles.gpu_host.facts.CudaStack"
    { echo "\$ pyinfra @local fact $facts"; timeout 120 python3 -m pyinfra -y @local fact $facts; echo "exit=$?"; } \
        >"$d/pyinfra-facts.txt" 2>&1
    tail -c 3000 "$d/pyinfra-facts.txt"
    log "facts: pyinfra @local gate (roles/gpu_host/verify.py)"
    local deploy=roles/gpu_host/verify.py
    [ -f "$deploy" ] || deploy=bench/h200/gpu_verify.py
    { echo "\$ pyinfra -y bench/h200/h200_node.py $deploy"; timeout 120 python3 -m pyinfra -y bench/h200/h200_node.py "$deploy"; echo "exit=$?"; } \
        >"$d/pyinfra-gate.txt" 2>&1
    { echo "\$ pyinfra -y @local $deploy --data gpu_expected_model=H200 --data gpu_expected_count=2 (must fail)"
      timeout 120 python3 -m pyinfra -y @local "$deploy" --data gpu_expected_model=H200 --data gpu_expected_count=2; echo "exit=$?"; } \
        >"$d/pyinfra-gate-expect2.txt" 2>&1
    tail -n 25 "$d/pyinfra-gate.txt"; tail -n 8 "$d/pyinfra-gate-expect2.txt"
}

# Start the rendered unit's ExecStart with its EnvironmentFile(s), the way systemd would
# (bench/h200/run_unit.py), and wait for /health. $1 = rendered dir, $2 = log file.
start_unit() {
    local rendered=$1 logf=$2
    rm -rf /etc/r1deploy/current && mkdir -p /etc/r1deploy && ln -sfn "$rendered" /etc/r1deploy/current
    mkdir -p /var/lib/r1deploy /var/cache/r1deploy
    setsid python3 bench/h200/run_unit.py "$rendered/r1-vllm.service" >"$logf" 2>&1 &
    echo $! >"$RES/unit.pid"
}

stop_server() {
    local pid
    pid=$(cat "$RES/unit.pid" 2>/dev/null) || return 0
    kill -TERM -- "-$pid" 2>/dev/null
    for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null
    rm -f "$RES/unit.pid"
    for _ in $(seq 1 30); do
        used=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
        [ "${used:-0}" -lt 2000 ] && break; sleep 1
    done
}

wait_health() {
    local port=$1 limit=$2 logf=$3 t=0
    while [ $t -lt "$limit" ]; do
        curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && return 0
        grep -q "Traceback\|Error:" "$logf" 2>/dev/null && ! kill -0 "$(cat "$RES/unit.pid")" 2>/dev/null && return 1
        sleep 2; t=$((t + 2))
    done
    return 1
}

render_node() {  # $1 out dir; model etc. from R1_H200_* env
    local out=$1
    python3 bench/h200/make_checkpoint.py "${R1_H200_MODEL:-deepseek-ai/DeepSeek-R1-Distill-Qwen-7B}" \
        "$(python3 -c 'import sys; sys.path.insert(0, "."); from r1deploy.fleet.inventory import load_specs; print(load_specs("bench/h200/h200_node.py")["@local"].model.local_dir)')"
    local mib
    mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
    echo "\$ r1deploy render --inventory bench/h200/h200_node.py --host @local --out $out --gpu 'NVIDIA H200' --gpus 1 --gpu-memory-mib $mib"
    python3 -m r1deploy render --inventory bench/h200/h200_node.py --host @local --out "$out" \
        --gpu "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" --gpus 1 --gpu-memory-mib "$mib"
}

stage_serve() {
    local d="$RES/serve"
    mkdir -p "$d"
    log "serve: render + checkpoint"
    render_node "$d/rendered" 2>&1 | tee "$d/render.txt"
    { echo "\$ r1deploy plan --inventory bench/h200/h200_node.py --gpu-memory-mib <nvidia-smi>"
      python3 -m r1deploy plan --inventory bench/h200/h200_node.py \
        --gpu-memory-mib "$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1)"; } >"$d/plan.txt" 2>&1
    cp "$d/rendered/vllm.yaml" "$d/rendered/vllm.env" "$d/rendered/r1-vllm.service" "$d/" 2>/dev/null
    log "serve: starting the unit's ExecStart"
    start_unit "$d/rendered" "$d/vllm-serve.log"
    if ! wait_health 8000 "$(($(left) - 60))" "$d/vllm-serve.log"; then
        log "serve: vLLM did not become healthy"; tail -n 60 "$d/vllm-serve.log"; stop_server; return 1
    fi
    log "serve: healthy"
    grep -E "Model loading took|Available KV cache memory|GPU KV cache size|Maximum concurrency|CUDA graph|memory profiling|non-torch|Memory profiling" "$d/vllm-serve.log" | tee "$d/memory-lines.txt"
    curl -s http://127.0.0.1:8000/v1/models >"$d/models.json"; cat "$d/models.json"; echo
    curl -s http://127.0.0.1:8000/version >"$d/version.json"
    local body='{"model": "DeepSeek-R1-Distill-Qwen-7B", "messages": [{"role": "user", "content": "What is 7 times 6? Answer with a number."}], "max_tokens": 32, "temperature": 0.6}'
    echo "\$ curl -s http://127.0.0.1:8000/v1/chat/completions -d '$body'" >"$d/chat.txt"
    curl -s -w '\nhttp=%{http_code} time=%{time_total}s\n' http://127.0.0.1:8000/v1/chat/completions \
        -H 'Content-Type: application/json' -d "$body" | tee -a "$d/chat.txt"
    if python3 -m r1deploy smoke --help >/dev/null 2>&1; then
        echo "\$ python3 -m r1deploy smoke http://127.0.0.1:8000 --model DeepSeek-R1-Distill-Qwen-7B --json" >"$d/smoke.txt"
        timeout 90 python3 -m r1deploy smoke http://127.0.0.1:8000 --model DeepSeek-R1-Distill-Qwen-7B --json \
            >>"$d/smoke.txt" 2>&1; echo "exit=$?" >>"$d/smoke.txt"; tail -n 5 "$d/smoke.txt"
    fi
    curl -s http://127.0.0.1:8000/metrics | grep -E "^vllm:(num_requests|gpu_cache|kv_cache|prompt_tokens_total|generation_tokens_total)" >"$d/metrics.txt"
    log "serve: up; left $(left)s"
}

bench_one() {  # $1 label; server must be up on :8000 serving $2 (served model name)
    local label=$1 served=$2 d="$RES/bench" c n
    mkdir -p "$d"
    for c in 1 16 64 256; do
        case $c in 1) n=8 ;; 16) n=64 ;; 64) n=192 ;; 256) n=512 ;; esac
        [ "$(left)" -lt 45 ] && { log "bench: no time left for $label c=$c"; break; }
        log "bench: $label concurrency $c, $n prompts"
        local args=(bench serve --backend vllm --base-url http://127.0.0.1:8000 --endpoint /v1/completions
            --model "$R1_TOKENIZER" --served-model-name "$served" --tokenizer "$R1_TOKENIZER"
            --dataset-name random --random-input-len 1024 --random-output-len 256 --ignore-eos
            --num-prompts $n --max-concurrency $c --request-rate inf --seed 0 --num-warmups 2
            --percentile-metrics ttft,tpot,itl,e2el --metric-percentiles 50,90,99
            --save-result --result-dir "$d" --result-filename "$label-c$c.json")
        echo "\$ vllm ${args[*]}" >>"$d/commands.txt"
        timeout $(($(left) - 20)) python3 -m vllm.entrypoints.cli.main "${args[@]}" >"$d/$label-c$c.log" 2>&1
        grep -E "Output token throughput|Request throughput|Mean TTFT|Mean TPOT|Successful requests" "$d/$label-c$c.log" | sed "s/^/  $label c=$c /"
    done
}

# SLO capacity (issue 22): R1_SLO_ARGS are bench/h200/slo.py's arguments (model, configs, start rates).
stage_slo() {
    local tag=${R1_SLO_TAG:-slo}
    mkdir -p "$RES/slo"
    log "slo: $tag: python3 bench/h200/slo.py ${R1_SLO_ARGS:-}"
    # shellcheck disable=SC2086
    python3 bench/h200/slo.py --out "$RES/slo/$tag" --budget "$(($(left) - 15))" ${R1_SLO_ARGS:-}
}

stage_bench() {
    local d="$RES/bench"
    mkdir -p "$d"
    export R1_TOKENIZER
    R1_TOKENIZER=$(python3 -c 'import sys; sys.path.insert(0, "."); from r1deploy.fleet.inventory import load_specs; print(load_specs("bench/h200/h200_node.py")["@local"].model.local_dir)')
    # 1) the planner's config: the unit from `serve` (start it if it is not up).
    if ! curl -sf http://127.0.0.1:8000/health >/dev/null; then
        [ -d "$RES/serve/rendered" ] || { mkdir -p "$RES/serve"; render_node "$RES/serve/rendered" >"$RES/serve/render.txt" 2>&1; }
        start_unit "$RES/serve/rendered" "$d/vllm-planner.log"
        wait_health 8000 240 "$d/vllm-planner.log" || { log "bench: planner server failed"; tail -n 40 "$d/vllm-planner.log"; stop_server; return 1; }
    fi
    bench_one planner DeepSeek-R1-Distill-Qwen-7B
    stop_server
    # 2) vLLM's defaults: the same checkpoint, only what the checkpoint needs (no weights).
    [ "$(left)" -lt 150 ] && { log "bench: no time left for the defaults server"; return 0; }
    local cmd="python3 -m vllm.entrypoints.cli.main serve $R1_TOKENIZER --load-format dummy --port 8000 --served-model-name defaults"
    echo "\$ $cmd" >"$d/defaults-command.txt"
    # Same environment file as the unit (offline, cache root, no FlashInfer sampler on this host).
    ( set -a; . "$RES/serve/rendered/vllm.env"; set +a; exec setsid $cmd ) >"$d/vllm-defaults.log" 2>&1 &
    echo $! >"$RES/unit.pid"
    wait_health 8000 $(($(left) - 60)) "$d/vllm-defaults.log" || { log "bench: defaults server failed"; tail -n 40 "$d/vllm-defaults.log"; stop_server; return 1; }
    grep -E "Model loading took|Available KV cache memory|GPU KV cache size|Maximum concurrency" "$d/vllm-defaults.log" | tee "$d/defaults-memory-lines.txt"
    bench_one defaults defaults
    stop_server
    python3 bench/h200/summarize.py bench "$d" | tee "$d/summary.md"
}

stage_agree() {
    mkdir -p "$RES/agree"
    python3 bench/h200/agree.py --out "$RES/agree" --deadline $(($(left) - 45)) 2>&1 | tee "$RES/agree/agree.txt"
}

stage_restart() {
    local d="$RES/restart"
    mkdir -p "$d"
    if [ ! -f "$d/rendered/vllm.yaml" ]; then
        log "restart: render + checkpoint"
        render_node "$d/rendered" >"$d/render.txt" 2>&1 || { cat "$d/render.txt"; return 1; }
        cp "$d/rendered/vllm.yaml" "$d/rendered/vllm.env" "$d/rendered/r1-vllm.service" "$d/"
    fi
    stop_server
    python3 bench/h200/restart.py --rendered "$d/rendered" --out "$d" --pidfile "$RES/unit.pid" \
        --runs "${R1_RESTART_RUNS:-cold-nowarmup,cold,warm,warm,warm}" --deadline $(($(left) - 25)) 2>&1 | tee -a "$d/restart.txt"
}

pack() {
    local tag
    tag=$(date -u +%H%M%S)
    stop_server 2>/dev/null
    tar -C "$RES" -czf "$OUT/results-$tag.tgz" --exclude='*.safetensors' . 2>/dev/null
    ls -la "$OUT"
}

trap 'pack' EXIT
for st in "$@"; do
    log "=== $st (left $(left)s)"
    "stage_$st" || log "stage $st failed (rc=$?)"
done
log "all stages done"
