#!/usr/bin/env bash
# Build the offline payload for the H200 host (run here, with a package index; the host has none).
#
# The host's python3 3.12 already has torch 2.11.0 / torchvision 0.26.0 / torchaudio 2.11.0
# (vLLM 0.26.0's exact pins), transformers, tokenizers, huggingface-hub, numpy, triton 3.6 and
# the rest of the image's list (HOST_PKGS below). The payload is everything else vLLM 0.26.0
# needs to serve a dense BF16 model on Hopper, plus pyinfra 3.10.0 and pydantic 2 for the
# `pyinfra @local` runs, unpacked with `pip install --target` and packed as xz tarballs cut in
# pieces that fit one device call each (bench/h200/payload.sha256 lists them).
#
# How the list was made: pip's resolver on vllm==0.26.0 + pyinfra==3.10.0 + pydantic for
# CPython 3.12 manylinux x86_64, with no-dependency stub wheels standing in for the host's
# torch/torchvision/torchaudio; minus every name the host image has; minus EXCLUDE (kernel
# libraries vLLM imports only on demand, for MoE/MLA/FP4/Blackwell paths, video decode, and
# the CLI extras of fastapi[standard]); plus anyio and typing_extensions at versions new enough
# for pydantic-core/openai. vLLM's wheel loses its FlashAttention-2 library (Hopper runs FA3),
# the optional Rust frontend binary and DeepGEMM builds for other Pythons: it is unpacked, not
# installed as a wheel, so its RECORD is never checked.
#
#   bash bench/h200/build_payload.sh      # -> .whl/p1 .whl/p2 ... and bench/h200/payload.sha256
#   R1_RESOLVE=1 bash bench/h200/build_payload.sh   # also re-resolve payload-wheels.txt (new pins)
#
# Reproducible: the pinned list (payload-wheels.txt) is used as committed unless R1_RESOLVE=1;
# the tarballs are written with a fixed file order, owner and mtime (tar --sort=name --mtime=@0
# --owner=0 --group=0 --numeric-owner --format=gnu) and xz's multi-threaded mode with a fixed
# thread count and block size, cut into fixed 20 MiB pieces. A rebuild with the same xz (5.4),
# pip and build Python therefore gives the same bytes (checked: a second build reproduced it), and the
# committed payload.sha256 verifies it: the build compares and says so (the file is rewritten
# only when the bytes changed, e.g. after R1_RESOLVE=1 or another pip/xz).
set -euo pipefail
cd "$(dirname "$0")/../.."
W=${R1_WHL_WORK:-/tmp/r1whl}
PIECE=${R1_PIECE_MIB:-10}  # 10 MiB pieces: three calls of <= 58 MiB each leave room for the ~4 MiB working tree
mkdir -p "$W"/{stubs,all,sel,vllm}
PL=()
for p in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1 manylinux_2_31 manylinux_2_34 \
         manylinux_2_35 manylinux_2_24 manylinux_2_26 manylinux_2_5 manylinux2010 manylinux_2_12; do
    PL+=(--platform "${p}_x86_64")
done
PY=(--only-binary=:all: --python-version 3.12 --implementation cp "${PL[@]}")

HOST_PKGS="absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin
jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax llvmlite
lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict
multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas
nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand
nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink
nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum
opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker
prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks
pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn
scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope
triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash
yarl zipp"
EXCLUDE="tokenspeed-triton tokenspeed-mla nvidia-cutlass-dsl nvidia-cutlass-dsl-libs-base nvidia-cutlass-dsl-libs-cu12
nvidia-cutlass-dsl-libs-cu13 nvidia-cutlass-dsl-libs-core nvidia-nvvm nvidia-cuda-nvcc nvidia-cuda-crt
nvidia-cuda-nvdisasm nvidia-cuda-cccl cuda-python cuda-tile tilelang z3-solver pynvvideocodec torchcodec
quack-kernels humming-kernels flashinfer-python nvidia-cudnn-frontend torch-c-dlpack-ext pyelftools
fastapi-cli fastapi-cloud-cli rich-toolkit rignore sentry-sdk fastar agent-detector detect-installer"
EXTRA="anyio==4.16.0 typing_extensions==4.16.0"

# 1. Stub wheels for what the host has and pip must not fetch (torch's CUDA closure).
python3 - "$W/stubs" <<'EOF'
import sys, zipfile
for name, ver in [("torch", "2.11.0+stub"), ("torchvision", "0.26.0+stub"), ("torchaudio", "2.11.0+stub")]:
    dist = f"{name}-{ver}"
    files = {f"{dist}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {ver}\n",
             f"{dist}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: stub\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{dist}.dist-info/RECORD"] = "".join(f"{k},,\n" for k in files) + f"{dist}.dist-info/RECORD,,\n"
    with zipfile.ZipFile(f"{sys.argv[1]}/{dist}-py3-none-any.whl", "w") as z:
        for k, v in files.items():
            z.writestr(k, v)
EOF
# 2. Resolve the closure for CPython 3.12 (only when asked or when there is no pinned list yet).
if [ "${R1_RESOLVE:-0}" = 1 ] || [ ! -s bench/h200/payload-wheels.txt ]; then
python3 -m pip install --dry-run --ignore-installed --report "$W/report.json" "${PY[@]}" --platform linux_x86_64 \
    --find-links "$W/stubs" --target "$W/dummy" "vllm==0.26.0" "torch==2.11.0+stub" "torchvision==0.26.0+stub" \
    "torchaudio==2.11.0+stub" "pyinfra==3.10.0" "pydantic>=2.12,<3" >"$W/resolve.log" 2>&1
# 3. What the host lacks, minus EXCLUDE, plus EXTRA: bench/h200/payload-wheels.txt.
HOST_PKGS="$HOST_PKGS" EXCLUDE="$EXCLUDE" EXTRA="$EXTRA" python3 - "$W/report.json" >bench/h200/payload-wheels.txt <<'EOF'
import json, os, re, sys
norm = lambda s: re.sub(r"[-_.]+", "-", s).lower()
skip = {norm(x) for x in (os.environ["HOST_PKGS"] + " " + os.environ["EXCLUDE"]).split()}
extra = os.environ["EXTRA"].split()
skip |= {norm(e.split("==")[0]) for e in extra}
rows = sorted({f"{m['name']}=={m['version']}" for i in json.load(open(sys.argv[1]))["install"]
               for m in [i["metadata"]] if norm(m["name"]) not in skip} | set(extra), key=str.lower)
print("\n".join(rows))
EOF
fi
# 4. Download them, unpack for 3.12 (pip --target), drop what Hopper/dense models never load.
python3 -m pip download --no-deps "${PY[@]}" -d "$W/sel" -r bench/h200/payload-wheels.txt >"$W/download.log"
rm -rf "$W/site312"
python3 -m pip install -q --no-index --no-deps --no-compile "${PY[@]}" --target "$W/site312" "$W"/sel/*.whl
rm -f "$W/site312/vllm/vllm_flash_attn/_vllm_fa2_C.abi3.so" "$W/site312/vllm/vllm-rs" \
      "$W"/site312/vllm/third_party/deep_gemm/_C.cpython-31[0134]-*.so
# 5. Two xz tarballs (deps, vllm) cut into pieces; a carry folder .whl/pN per device call.
rm -rf "$W/pieces" .whl/p[0-9]*
mkdir -p "$W/pieces"
TAR=(tar -C "$W/site312" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu -cf -)
XZ=(xz -3 --threads=2 --block-size=32MiB --check=crc64)
(cd "$W/site312" && ls | LC_ALL=C sort | grep -v '^vllm$\|^vllm-0.26.0.dist-info$') >"$W/listA.txt"
"${TAR[@]}" -T "$W/listA.txt" | "${XZ[@]}" >"$W/deps.tar.xz"
"${TAR[@]}" vllm vllm-0.26.0.dist-info | "${XZ[@]}" >"$W/vllm.tar.xz"
split -b "${PIECE}M" -d -a 2 "$W/deps.tar.xz" "$W/pieces/deps.tar.xz."
split -b "${PIECE}M" -d -a 2 "$W/vllm.tar.xz" "$W/pieces/vllm.tar.xz."
(cd "$W/pieces" && sha256sum ./* | sed 's# \./# #') >"$W/payload.sha256"
if cmp -s "$W/payload.sha256" bench/h200/payload.sha256; then
    echo "payload: reproduced bench/h200/payload.sha256 byte for byte"
else
    echo "payload: bytes differ from bench/h200/payload.sha256 (diff below); rewriting it"
    diff bench/h200/payload.sha256 "$W/payload.sha256" || true
    cp "$W/payload.sha256" bench/h200/payload.sha256
fi
# Pack pieces into carry folders of at most 60 MiB, in order.
python3 - "$W/pieces" <<'EOF'
import os, shutil, sys
src = sys.argv[1]
folder, size, n = None, 0, 0
for name in sorted(os.listdir(src), key=lambda s: (not s.startswith("deps"), s)):
    f = os.path.join(src, name)
    sz = os.path.getsize(f)
    if folder is None or size + sz > 58 * 2**20:
        n += 1
        folder, size = f".whl/p{n}", 0
        os.makedirs(folder, exist_ok=True)
    shutil.copy(f, folder)
    size += sz
for d in sorted(os.listdir(".whl")):
    if d.startswith("p"):
        print(d, sorted(os.listdir(f".whl/{d}")), round(sum(os.path.getsize(f".whl/{d}/{x}") for x in os.listdir(f".whl/{d}")) / 2**20, 1), "MiB")
EOF
