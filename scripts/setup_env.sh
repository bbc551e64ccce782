#!/usr/bin/env bash
# Sets up what objrec needs on this machine, idempotently:
#   .venv with objrec (editable) and every dependency pinned by constraints.txt;
#   .venv-checkov with checkov (the deployment tests' policy suite), pinned likewise;
#   the Debian packages dataset-fashion-mnist (real sample photos) and chromium (the headless
#   browser of the report test) when they are missing.
# Reinstalls only when requirements*.txt, constraints.txt or setup.py change.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
stamp=.venv/.objrec-install-stamp
wanted=$(cat requirements.txt requirements-dev.txt constraints.txt setup.py | sha256sum | cut -d' ' -f1)

if [ ! -x .venv/bin/python ]; then
  echo "objrec: creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "objrec: installing pinned packages into .venv (a few minutes the first time)"
  .venv/bin/python -m pip install --quiet --upgrade pip==25.3
  .venv/bin/python -m pip install --quiet -c constraints.txt -r requirements.txt -r requirements-dev.txt
  .venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
  echo "$wanted" > "$stamp"
fi

# checkov (deployment policy tests) in a virtualenv of its own: its pins conflict with ours.
checkov_stamp=.venv-checkov/.objrec-install-stamp
checkov_wanted=$(sha256sum requirements-checkov.txt | cut -d' ' -f1)
if [ "$(cat "$checkov_stamp" 2>/dev/null)" != "$checkov_wanted" ]; then
  echo "objrec: installing checkov into .venv-checkov (deployment policy tests)"
  [ -x .venv-checkov/bin/python ] || "$python" -m venv .venv-checkov
  .venv-checkov/bin/python -m pip install --quiet --upgrade pip==25.3
  .venv-checkov/bin/python -m pip install --quiet --no-deps -r requirements-checkov.txt
  echo "$checkov_wanted" > "$checkov_stamp"
fi

# Debian packages: the sample photos, and a headless browser for the report's rendering test.
packages=()
[ -d /usr/share/datasets/fashion-mnist ] || packages+=(dataset-fashion-mnist)
command -v chromium >/dev/null || packages+=(chromium)
if [ ${#packages[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  echo "objrec: installing the Debian packages ${packages[*]}"
  # The demo's and the tests' set-up at once take turns (flock: apt-get update fails at once
  # on a held lock); an apt-get of the system's is waited for on dpkg's lock.
  (
    flock 9
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get -o DPkg::Lock::Timeout=900 install -y -qq \
      --no-install-recommends "${packages[@]}" >/dev/null
  ) 9>"${TMPDIR:-/tmp}/objrec-apt.lock"
fi
