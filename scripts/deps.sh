#!/usr/bin/env bash
# Ensures the Debian 12 packages ckptkit needs are installed. As root it installs what is
# missing; otherwise it prints the apt-get line to run and fails.
#   scripts/deps.sh          build + test dependencies
#   scripts/deps.sh --build  only what building needs
set -euo pipefail

build_pkgs=(g++ cmake ninja-build pkg-config make libfmt-dev libcli11-dev libsimdjson-dev
            libhwy-dev libgtest-dev libbenchmark-dev zlib1g-dev libssl-dev libtomlplusplus-dev)
# Tests: PyTorch and NumPy are the oracles; clang + its runtime build the fuzzers; GNU time
# measures peak memory in benchmarks; openssl and b3sum are independent hash oracles; strace
# shows that outputs are fsynced before their link and their folder after it.
test_pkgs=(python3 python3-torch python3-numpy clang-14 libclang-rt-14-dev time openssl b3sum
           strace)

pkgs=("${build_pkgs[@]}")
[[ "${1:-}" == "--build" ]] || pkgs+=("${test_pkgs[@]}")

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

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
