#!/bin/sh
# deps.sh: installs the Debian packages descent needs, only those missing.
# `deps.sh` is what `make run` needs; `deps.sh test` adds what the tests use
# (chromium for the dashboard test, valgrind, clang for the fuzzers, nginx for
# the many-daemons-behind-one-address test, Fashion-MNIST for the short demo,
# jsonschema and PyYAML for holding replies against proto/openapi.yaml, node
# and npm for `make check-openapi`).
# Libraries are looked up with pkg-config, tools with command -v; apt-get runs
# (through sudo when not root) only if something is missing, after an
# `apt-get update` because a fresh machine's package lists are empty.
set -eu

missing=""
need_pc() { # pkg-config name, Debian package
  if ! command -v pkg-config >/dev/null 2>&1 || ! pkg-config --exists "$1" 2>/dev/null; then
    missing="$missing $2"
  fi
}
need_cmd() { # command, Debian package
  command -v "$1" >/dev/null 2>&1 || missing="$missing $2"
}
need_py() { # module Debian's python3 imports, Debian package
  [ -x /usr/bin/python3 ] && /usr/bin/python3 -c "import $1" >/dev/null 2>&1 || missing="$missing $2"
}

need_cmd pkg-config pkg-config
need_cmd cc gcc
need_cmd make make
need_pc libmicrohttpd libmicrohttpd-dev
need_pc jansson libjansson-dev
need_pc libuv libuv1-dev
need_pc check check
need_pc libcurl libcurl4-openssl-dev
need_pc zlib zlib1g-dev
need_pc raft libraft-dev
need_cmd python3 python3
need_cmd curl curl
need_cmd openssl openssl
if [ "${1:-}" = test ]; then
  need_cmd chromium chromium
  need_cmd valgrind valgrind
  need_cmd clang clang
  need_py jsonschema python3-jsonschema
  need_py yaml python3-yaml
  need_cmd node nodejs
  need_cmd npm npm
  need_cmd tc iproute2
  [ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || missing="$missing nginx-light"
  [ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || missing="$missing dataset-fashion-mnist"
  # the Python package's tests: Debian's interpreter with torch, numpy, setuptools and venv
  /usr/bin/python3 -c "import torch" >/dev/null 2>&1 || missing="$missing python3-torch"
  /usr/bin/python3 -c "import numpy" >/dev/null 2>&1 || missing="$missing python3-numpy"
  /usr/bin/python3 -c "import setuptools" >/dev/null 2>&1 || missing="$missing python3-setuptools"
  /usr/bin/python3 -c "import ensurepip" >/dev/null 2>&1 || missing="$missing python3-venv"
  /usr/bin/python3 -c "import pip" >/dev/null 2>&1 || missing="$missing python3-pip"
  [ -e /usr/lib/llvm-14/lib/clang/14.0.6/lib/linux/libclang_rt.fuzzer-x86_64.a ] || \
    dpkg -s libclang-rt-14-dev >/dev/null 2>&1 || missing="$missing libclang-rt-14-dev"
fi

# the sparse demo's data (make demo-sparse, test_demo_sparse): apt's package lists themselves
lists_empty=""
if [ "${1:-}" = test ] && ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then lists_empty=1; fi
if [ -z "$missing" ]; then
  [ -z "$lists_empty" ] && exit 0
  echo "deps: apt's package lists are empty (the sparse demo's data): apt-get update"
  [ "$(id -u)" -ne 0 ] && SUDO="sudo" || SUDO=""
  $SUDO apt-get update -qq
  exit 0
fi
echo "deps: installing$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
