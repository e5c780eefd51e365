#!/usr/bin/env bash
# Make the lock files from pyproject.toml: pinned versions with their sha256 hashes.
# Keeps today's pins and adds what pyproject.toml gained; --upgrade moves every pin to the newest allowed.
#   requirements.lock       the runtime dependencies (scripts/install.sh installs exactly these)
#   requirements-test.lock  the same pins plus the test tools (make test and CI: scripts/bootstrap.sh --test)
# Both include setuptools, the build backend, so that building Proximity needs nothing unpinned.
# pip-tools runs from a virtual environment of its own (.venv-lock), outside the ones it locks.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
[ -x .venv-lock/bin/pip-compile ] || { "$python" -m venv .venv-lock && .venv-lock/bin/pip install -q 'pip-tools>=7.4,<8'; }
compile=(.venv-lock/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras
         --no-emit-index-url --no-emit-find-links --all-build-deps "$@")
"${compile[@]}" -o requirements.lock pyproject.toml
# The test lock is constrained by the runtime lock: the tests run the versions an install gets.
"${compile[@]}" --extra test -c requirements.lock -o requirements-test.lock pyproject.toml
echo "lock: requirements.lock and requirements-test.lock refreshed; review them with git diff, run make test, commit"
