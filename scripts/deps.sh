#!/usr/bin/env bash
# Ensures the Debian 12 packages ckptkit needs are installed. As root it installs what is
# missing; otherwise it prints the apt-get line to run and fails.
#   scripts/deps.sh          build + test dependencies
#   scripts/deps.sh --build  only what building needs
set -euo pipefail

build_pkgs=(g++ cmake ninja-build pkg-config make libfmt-dev libcli11-dev libsimdjson-dev
            libhwy-dev libgtest-dev libbenchmark-dev zlib1g-dev libssl-dev libtomlplusplus-dev
            liblapacke-dev libopenblas-dev)
# The model library (docs/library.md): SQLite for its database, cpp-httplib (a shared library
# in Debian) for `library serve`.
build_pkgs+=(libsqlite3-dev libcpp-httplib-dev)
# Tests: PyTorch and NumPy are the oracles; clang + its runtime build the fuzzers; GNU time
# measures peak memory in benchmarks; openssl and b3sum are independent hash oracles; strace
# shows that outputs are fsynced before their link and their folder after it.
test_pkgs=(python3 python3-torch python3-numpy clang-14 libclang-rt-14-dev time openssl b3sum
           strace nodejs)
# npm installs the ggml oracle; Debian packages it apart from nodejs (other node builds bundle it).
command -v npm >/dev/null 2>&1 || test_pkgs+=(npm)

# The Python module (docs/python.md): pybind11 builds it against Debian's python3 (python3-dev:
# Python.h); pytest runs its tests.
build_pkgs+=(python3-dev pybind11-dev python3-pybind11)
test_pkgs+=(python3-pytest)
# The library's web page is tested in a real browser: headless Chromium driven by Selenium.
test_pkgs+=(chromium chromium-driver python3-selenium)

pkgs=("${build_pkgs[@]}")
[[ "${1:-}" == "--build" ]] || pkgs+=("${test_pkgs[@]}")

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
install_oracles() {
  # Real ggml, prebuilt, from the npm registry: the oracle the GGUF tests compare with (called
  # through ctypes; nothing of it is linked into ckptkit). Pinned; installed once.
  [[ "${1:-}" == "--build" ]] && return 0
  local dir=build/oracles pkg=@node-llama-cpp/linux-x64@3.22.1
  local lib=$dir/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64/libggml-base.so
  [[ -f $lib ]] && return 0
  mkdir -p "$dir"
  echo "Installing the ggml test oracle ($pkg) into $dir" >&2
  npm install --prefix "$dir" --no-save --no-audit --no-fund --ignore-scripts "$pkg" >&2
  [[ -f $lib ]] || { echo "ggml oracle missing after npm install: $lib" >&2; exit 1; }
}
cd "$(dirname "$0")/.."
if [[ ${#missing[@]} -eq 0 ]]; then
  install_oracles "${1:-}"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "ckptkit needs these Debian packages: ${missing[*]}" >&2
  echo "Install them with:" >&2
  echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
echo "Installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
install_oracles "${1:-}"
