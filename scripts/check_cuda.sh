#!/usr/bin/env bash
# CUDA offload check for a GPU machine without network, from what scripts/prep_cuda_check.sh put in
# .cuda-check/: builds llama-cpp-python with CUDA into .cuda-check/venv, shows that the engine offloads
# every layer, runs the engine tests (tests/test_engine*.py) on the GPU, and prints decode tok/s of our
# Engine against the bare C-API loop (benchmarks/bench_generate.py --quick).
#
# usage: scripts/check_cuda.sh [--dry-run] [--arch SM]   (SM: CMAKE_CUDA_ARCHITECTURES, default 90 = H100/H200)
#   --dry-run  checks the prepared files and prints every command instead of running it (no GPU needed)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREP=$REPO/.cuda-check
DRY=0
ARCH=90
while (($#)); do
    case $1 in
        --dry-run) DRY=1 ;;
        --arch) ARCH=${2:?--arch needs a value}; shift ;;
        *) echo "usage: $0 [--dry-run] [--arch SM]" >&2; exit 2 ;;
    esac
    shift
done

run() {  # print the command; run it unless --dry-run
    printf '+ %s\n' "$*"
    ((DRY)) || "$@"
}

fail() {
    echo "error: $*" >&2
    exit 1
}

echo "== prepared files"
[[ -d $PREP ]] || fail "$PREP is missing: run scripts/prep_cuda_check.sh on a machine with network first"
SDISTS=("$PREP"/llama_cpp_python-*.tar.gz)
[[ -f ${SDISTS[0]} ]] || fail "no llama-cpp-python sdist in $PREP"
SDIST=${SDISTS[0]}
MODEL=$PREP/test-cache/SmolLM2-135M-Instruct.Q4_1.gguf
for f in "$MODEL" "$PREP/python-version" "$PREP/shared/data/bpo_test.json" "$PREP/shared/fixtures/llama2-tokenizer.model"; do
    [[ -f $f ]] || fail "$f is missing: rerun scripts/prep_cuda_check.sh"
done
echo "sdist $(basename "$SDIST"), $(find "$PREP/wheels" -name '*.whl' | wc -l) wheels, model $(basename "$MODEL")"

PY=${PYTHON:-python3}
WANT=$(cat "$PREP/python-version")
HAVE=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
[[ $HAVE == "$WANT" ]] || fail "the wheels are for Python $WANT but $PY is $HAVE: set PYTHON=python$WANT"

echo "== GPU and CUDA toolkit"
if ((DRY)); then
    echo "(dry run: nvidia-smi and nvcc not checked)"
else
    command -v nvidia-smi >/dev/null || fail "nvidia-smi not found: no NVIDIA driver on this machine"
    nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv,noheader
    if ! command -v nvcc >/dev/null && [[ -x /usr/local/cuda/bin/nvcc ]]; then
        export PATH=/usr/local/cuda/bin:$PATH
    fi
    command -v nvcc >/dev/null || fail "nvcc not found: the CUDA toolkit is needed to build llama.cpp's CUDA backend"
    nvcc --version | tail -1
fi

# ../shared holds the test fixtures (tests/conftest.py reads it beside the checkout)
if [[ ! -e $REPO/../shared ]]; then
    run ln -s "$PREP/shared" "$REPO/../shared"
fi

echo "== llama-cpp-python with CUDA (sm_$ARCH) into $PREP/venv"
VENV=$PREP/venv
PIP=("$VENV/bin/python" -m pip install --no-index --find-links "$PREP/wheels")
run "$PY" -m venv "$VENV"
run env CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=$ARCH" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    "${PIP[@]}" --log "$PREP/build.log" "$SDIST"
run "${PIP[@]}" -e "$REPO" pytest pexpect

echo "== the engine offloads every layer"
run "$VENV/bin/python" - "$MODEL" <<'EOF'
import os, sys, tempfile
from bpo_local.backends.llamacpp import Engine
from bpo_local.backends.llamacpp.system import gpu_backend

backend = gpu_backend()
print("gpu backend:", backend)
if backend is None:
    sys.exit("error: llama.cpp was built without a usable GPU backend")
with tempfile.TemporaryFile("w+") as log:  # llama.cpp logs to fd 2: read its "offloaded N/M layers" line
    saved = os.dup(2)
    os.dup2(log.fileno(), 2)
    try:
        Engine(sys.argv[1], n_ctx=512, verbose=True).close()
    finally:
        os.dup2(saved, 2)
    log.seek(0)
    lines = [line.strip() for line in log if "offloaded" in line or "assigned to device" in line]
print("\n".join(line for line in lines if "offloaded" in line) or "no 'offloaded' line in llama.cpp's log")
on_cpu = [line for line in lines if "assigned to device CPU" in line]
done = [line.split("offloaded", 1)[1].split()[0] for line in lines if "offloaded" in line]
if on_cpu or not done or done[-1].split("/")[0] != done[-1].split("/")[1]:
    sys.exit("error: not every layer was offloaded" + "".join("\n  " + line for line in on_cpu))
EOF

echo "== engine tests on the GPU"
run env BPO_LOCAL_TEST_CACHE="$PREP/test-cache" OMP_WAIT_POLICY=passive \
    "$VENV/bin/python" -m pytest -q -p no:cacheprovider "$REPO"/tests/test_engine*.py

echo "== decode speed: our Engine against the bare C-API loop, all layers on the GPU"
echo "(the (b) llama-cpp-python row keeps its own default of no offload)"
run "$VENV/bin/python" "$REPO/benchmarks/bench_generate.py" --quick --model "$MODEL" \
    --data "$PREP/shared/data/bpo_test.json"
echo "done"
