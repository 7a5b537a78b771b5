#!/usr/bin/env bash
# Installs the Debian packages corgi needs, only those missing, non-interactively. Used by `make run` and
# `make test`; safe to run again. Boost comes as 1.81's components (not libboost1.81-all-dev, whose MPI and Python
# bindings pull hundreds of MiB that corgi never uses): headers (Asio, Beast), context (fibers) and url.
# `--test` (`make test`) adds what only the tests use, so that `make run` does not pay for it: a real Prometheus
# server and promtool, headless Chromium and its WebDriver. The tests start their own Prometheus on a free port; the
# system service Debian's package starts under systemd is stopped and disabled when this script installed it.
set -euo pipefail
packages=(
  cmake make g++ clang libclang-rt-14-dev
  libboost1.81-dev libboost-context1.81-dev libboost-url1.81-dev
  nlohmann-json3-dev pybind11-dev catch2
  python3.11 python3.11-dev python3-flask python3-django python3-werkzeug python3-bottle python3-pytest
  nginx-light uwsgi-core uwsgi-plugin-python3 gunicorn wrk curl
)
test_packages=(prometheus chromium chromium-driver)
for arg in "$@"; do
  case "$arg" in
    --test) packages+=("${test_packages[@]}") ;;
    *) echo "install-deps.sh: unknown option $arg (known: --test)" >&2; exit 2 ;;
  esac
done
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

if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null &&
   systemctl is-enabled prometheus >/dev/null 2>&1; then
  echo "disabling the prometheus system service the package started (the tests run their own)"
  "${sudo_cmd[@]}" systemctl disable --now prometheus || true
fi
