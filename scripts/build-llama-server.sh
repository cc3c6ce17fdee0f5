#!/usr/bin/env bash
# Build llama.cpp's llama-server from the llama.cpp that ships inside the llama-cpp-python sdist
# of the version this project runs, so the team server and the in-process model are the same
# llama.cpp. Idempotent: a second run with the same version and flags does nothing.
#
#   scripts/build-llama-server.sh            # -> .cache/llama-server/bin/llama-server
#   CMAKE_ARGS=-DGGML_CUDA=ON scripts/build-llama-server.sh   # a CUDA server (GPU machine)
#
# Environment:
#   LLAMA_SERVER_DIR   where it builds (default: .cache/llama-server in the repository)
#   LLAMA_CPP_PYTHON_VERSION  the sdist to build from (default: the version installed in .venv,
#                      else the newest release that pyproject.toml's pin allows)
#   LLAMA_CMAKE_ARGS   base CMake flags (the Makefile passes its no-AMX flags here)
#   CMAKE_ARGS         extra CMake flags, after the base ones (CUDA, ...)
#   JOBS               parallel compile jobs (default 2)
#   NICE               niceness of the compiler (default 10)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${LLAMA_SERVER_DIR:-$repo/.cache/llama-server}"
venv_python="$repo/.venv/bin/python"
jobs="${JOBS:-2}"
niceness="${NICE:-10}"

version="${LLAMA_CPP_PYTHON_VERSION:-}"
if [[ -z "$version" && -x "$venv_python" ]]; then
    version="$("$venv_python" -c 'from importlib.metadata import version; print(version("llama-cpp-python"))' 2>/dev/null || true)"
fi
if [[ -n "$version" ]]; then
    spec="llama-cpp-python==$version"
else
    spec="$(grep -o '"llama-cpp-python[^"]*"' "$repo/pyproject.toml" | tr -d '"')"
fi

# x86-64 without AMX: some virtual machines advertise it and fault on its first instruction.
if [[ -z "${LLAMA_CMAKE_ARGS+x}" && "$(uname -m)" == x86_64 ]]; then
    no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    LLAMA_CMAKE_ARGS="-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DCMAKE_C_FLAGS='$no_amx' -DCMAKE_CXX_FLAGS='$no_amx'"
fi
# Only what the server needs; no HTTPS (the server listens, it downloads nothing), no network
# at build time (the web UI is not fetched), one static binary that can be copied anywhere.
flags="-DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_SERVER=ON \
-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
-DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_BUILD_UI=OFF ${LLAMA_CMAKE_ARGS:-} ${CMAKE_ARGS:-}"

stamp="$dir/bin/llama-server.stamp"
want="$spec $flags"
if [[ -x "$dir/bin/llama-server" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    echo "llama-server is up to date: $dir/bin/llama-server ($spec)"
    exit 0
fi

start=$SECONDS
mkdir -p "$dir/sdist" "$dir/bin"
python="$venv_python"
[[ -x "$python" ]] || python=python3
if ! ls "$dir/sdist/"llama_cpp_python-"${version:-}"*.tar.gz >/dev/null 2>&1; then
    echo "downloading the $spec sdist"
    "$python" -m pip download -q --no-deps --no-binary :all: --no-build-isolation "$spec" -d "$dir/sdist" \
        || "$python" -m pip download -q --no-deps --no-binary :all: "$spec" -d "$dir/sdist"
fi
tarball="$(ls -t "$dir/sdist/"llama_cpp_python-*.tar.gz | head -1)"
src="$dir/src/$(basename "$tarball" .tar.gz)"
if [[ ! -f "$src/vendor/llama.cpp/CMakeLists.txt" ]]; then
    mkdir -p "$dir/src"
    tar -xzf "$tarball" -C "$dir/src"
fi

build="$dir/build"
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
# A cache from other flags or another source tree would keep its old settings: start afresh.
if [[ -f "$build/CMakeCache.txt" ]] && ! grep -q "^CMAKE_HOME_DIRECTORY:INTERNAL=$src/vendor/llama.cpp$" "$build/CMakeCache.txt"; then
    rm -rf "$build"
fi
eval "cmake -S '$src/vendor/llama.cpp' -B '$build' ${generator[*]:-} $flags" >"$dir/cmake.log" 2>&1 \
    || { tail -30 "$dir/cmake.log"; exit 1; }
nice -n "$niceness" cmake --build "$build" --target llama-server -j "$jobs" 2>&1 | tail -5
cp "$build/bin/llama-server" "$dir/bin/llama-server.new"
mv "$dir/bin/llama-server.new" "$dir/bin/llama-server"
echo "$want" >"$stamp"
echo "built $dir/bin/llama-server from $(basename "$tarball") in $((SECONDS - start)) s"
"$dir/bin/llama-server" --version 2>&1 | tail -2
