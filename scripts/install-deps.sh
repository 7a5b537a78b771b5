#!/usr/bin/env bash
# Installs the Debian packages corgi needs, only those missing, non-interactively. Used by `make run` and
# `make test`; safe to run again. Boost comes as 1.81's components (not libboost1.81-all-dev, whose MPI and Python
# bindings pull hundreds of MiB that corgi never uses): headers (Asio, Beast), context (fibers) and url.
set -euo pipefail
packages=(
  cmake make g++ clang libclang-rt-14-dev
  libboost1.81-dev libboost-context1.81-dev libboost-url1.81-dev
  nlohmann-json3-dev pybind11-dev catch2
  python3.11 python3.11-dev python3-flask python3-django python3-werkzeug python3-bottle python3-pytest
  nginx-light uwsgi-core uwsgi-plugin-python3 gunicorn wrk curl
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}"
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -q
"${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
