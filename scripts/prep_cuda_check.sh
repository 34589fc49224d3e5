#!/usr/bin/env bash
# Prepare, on a machine with network, everything scripts/check_cuda.sh needs on a GPU machine that may
# have none, in .cuda-check/ (gitignored):
#   llama_cpp_python-VER.tar.gz  the installed version's sdist, trimmed (.git, test models, docs, media)
#   wheels/                      build and runtime wheels for this Python (pip --no-index on the GPU side)
#   test-cache/                  SmolLM2-135M-Instruct Q4_1, the engine tests' model
#   shared/                      the fixtures and data the engine tests and bench read from ../shared
#   python-version               the X.Y the wheels are for: run check_cuda.sh with the same
# The trimmed sources are configured once with CMake (CPU only) to show that nothing the build needs
# was trimmed.
#
# usage: scripts/prep_cuda_check.sh
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$REPO/.cuda-check
PY=${PYTHON:-$REPO/.venv/bin/python}

VER=$("$PY" -c 'from importlib.metadata import version; print(version("llama_cpp_python"))')
PYVER=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
mkdir -p "$OUT/wheels" "$OUT/test-cache" "$OUT/shared/fixtures" "$OUT/shared/data"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

echo "== llama-cpp-python $VER sdist, trimmed"
CACHED=$HOME/.cache/bpo-local-tests/sdist/llama_cpp_python-$VER.tar.gz
if [[ -f $CACHED ]]; then
    cp "$CACHED" "$WORK/"
else
    "$PY" -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$VER" -d "$WORK"
fi
tar -xzf "$WORK/llama_cpp_python-$VER.tar.gz" -C "$WORK"
SRC=$WORK/llama_cpp_python-$VER
find "$SRC" -name .git -prune -exec rm -rf {} +
rm -rf "$SRC/docs" "$SRC/vendor/llama.cpp/docs" "$SRC/vendor/llama.cpp/media" "$SRC/vendor/llama.cpp/.github"
find "$SRC/vendor/llama.cpp/models" -maxdepth 1 -type f -name 'ggml-vocab-*' -delete
tar -czf "$OUT/llama_cpp_python-$VER.tar.gz" -C "$WORK" "llama_cpp_python-$VER"
du -h "$OUT/llama_cpp_python-$VER.tar.gz"

echo "== CMake configure of the trimmed sources (CPU, to catch a missing file)"
if command -v cmake >/dev/null; then
    cmake -S "$SRC" -B "$WORK/build" -DGGML_CUDA=off >"$WORK/configure.log" 2>&1 \
        || { tail -30 "$WORK/configure.log"; echo "error: the trimmed sdist does not configure" >&2; exit 1; }
    echo "configured"
else
    echo "cmake not installed here: configure check skipped"
fi

echo "== wheels for Python $PYVER"
DEPS=$("$PY" - "$REPO/pyproject.toml" <<'EOF'
import sys, tomllib
deps = tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]
print("\n".join(d for d in deps if not d.startswith("llama-cpp-python")))
EOF
)
mapfile -t DEPS <<<"$DEPS"
"$PY" -m pip download --quiet -d "$OUT/wheels" "scikit-build-core[pyproject]>=0.9.2" cmake ninja setuptools wheel \
    pytest pexpect "${DEPS[@]}"
echo "$PYVER" >"$OUT/python-version"
find "$OUT/wheels" -name "*.whl" | wc -l

echo "== engine test model and shared files"
"$PY" -c "import sys; sys.path.insert(0, '$REPO/tests'); import conftest; print(conftest._fetch_smollm2())" \
    | xargs -I{} cp {} "$OUT/test-cache/"
cp "$REPO/../shared/fixtures/llama2-tokenizer.model" "$OUT/shared/fixtures/"
cp "$REPO/../shared/data/bpo_test.json" "$OUT/shared/data/"
du -sh "$OUT"
echo "ready: copy the checkout with .cuda-check/ to the GPU machine and run scripts/check_cuda.sh"
