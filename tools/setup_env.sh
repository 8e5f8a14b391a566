#!/usr/bin/env bash
# Create (or check) mmdat's virtual environment: torch + torchvision, mmcv 2.1.0 with compiled
# ops, mmengine, mmpretrain, mmdet, mmsegmentation, openmim, then mmdat in editable mode.
#
#   bash tools/setup_env.sh            # idempotent: a second run only verifies (seconds)
#   MMDAT_VENV=/path/to/venv bash tools/setup_env.sh
#
# Environment:
#   MMDAT_VENV   where the virtual environment lives        (default: <repo>/.venv)
#   MMDAT_CACHE  where the built mmcv wheels are kept       (default: ~/.cache/mmdat)
#                Wheels are keyed on the torch version (and CUDA when built with FORCE_CUDA),
#                so a wheel compiled against another torch is never reused.
#   PYTHON       the interpreter that creates the venv      (default: python3)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MMDAT_VENV:-$REPO/.venv}"
CACHE="${MMDAT_CACHE:-$HOME/.cache/mmdat}"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="torch==2.13.0,!=2.13.0+cpu"   # PyPI's build: the local +cpu wheel has no torchvision
TORCHVISION_SPEC="torchvision==0.28.0"
MMCV_VERSION="2.1.0"
CONSTRAINTS="$REPO/requirements/constraints.txt"

step=""
trap 'rc=$?; if [ $rc -ne 0 ]; then echo "setup_env.sh: FAILED at step: ${step} (exit $rc)" >&2; fi' EXIT
say() { step="$1"; echo "[setup_env] $1"; }

# The stamp records what the environment was built from; when it matches and the imports work,
# the script is done in seconds.
stamp_src="$(cat "$REPO"/requirements/*.txt "$REPO/setup.py" "$REPO/tools/setup_env.sh" | sha1sum | cut -c1-16)"
stamp="$VENV/.mmdat-env-$stamp_src"

verify() {
  "$VENV/bin/python" - <<'EOF'
import importlib, sys
mods = ['torch', 'torchvision', 'mmengine', 'mmcv', 'mmcv._ext', 'mmpretrain', 'mmdet', 'mmseg',
        'mmdat', 'mim', 'pytest']
for m in mods:
    try:
        importlib.import_module(m)
    except Exception as e:  # noqa: BLE001 - report any import problem by module name
        print(f'[setup_env] cannot import {m}: {type(e).__name__}: {e}', file=sys.stderr)
        sys.exit(1)
import setuptools, torch, mmcv
major = int(setuptools.__version__.split('.')[0])
if not 77 <= major < 82:
    print(f'[setup_env] setuptools {setuptools.__version__} is outside >=77,<82', file=sys.stderr)
    sys.exit(1)
print(f'[setup_env] ok: torch {torch.__version__}, mmcv {mmcv.__version__} (with ops)')
EOF
}

if [ -f "$stamp" ] && verify 2>/dev/null; then
  step="done"
  exit 0
fi

say "create virtual environment at $VENV"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -c "$CONSTRAINTS")
"$VENV/bin/python" -m pip install --disable-pip-version-check -q --upgrade "pip>=24"

say "build prerequisites (setuptools<82, wheel, ninja, numpy)"
"${PIP[@]}" -q -r "$REPO/requirements/build.txt"

say "torch 2.13.0 + torchvision 0.28.0"
if ! "$VENV/bin/python" -c "import torch, torchvision" 2>/dev/null; then
  "${PIP[@]}" "$TORCH_SPEC" "$TORCHVISION_SPEC"
fi
"$VENV/bin/python" -c "import torch, torchvision; assert torch.__version__.startswith('2.13.0')"

say "mmcv $MMCV_VERSION with compiled ops"
if ! "$VENV/bin/python" -c "import mmcv, mmcv._ext; assert mmcv.__version__ == '$MMCV_VERSION'" 2>/dev/null; then
  torch_key="$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    export FORCE_CUDA=1
    torch_key="$torch_key-cuda"
  fi
  wheel_dir="$CACHE/mmcv-$MMCV_VERSION/torch-$torch_key-py$("$VENV/bin/python" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')"
  mkdir -p "$wheel_dir"
  if ! ls "$wheel_dir"/mmcv-*.whl >/dev/null 2>&1; then
    echo "[setup_env] building mmcv $MMCV_VERSION against torch $torch_key (about 20 min on 2 cores)"
    # --no-cache-dir: pip's own wheel cache is not keyed on torch; ours is.
    MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" "$VENV/bin/python" -m pip wheel \
      --disable-pip-version-check --no-cache-dir --no-build-isolation --no-deps \
      -w "$wheel_dir.tmp" "mmcv==$MMCV_VERSION"
    mv "$wheel_dir.tmp"/mmcv-*.whl "$wheel_dir"/ && rm -rf "$wheel_dir.tmp"
  fi
  "${PIP[@]}" --force-reinstall --no-deps "$wheel_dir"/mmcv-*.whl
  "${PIP[@]}" -q "mmcv==$MMCV_VERSION"   # its own runtime requirements
fi
"$VENV/bin/python" -c "import mmcv._ext" || { echo "mmcv was built without mmcv._ext (compiled ops)" >&2; exit 1; }

say "mmengine, mmpretrain, mmdet, mmsegmentation, openmim and test tools"
"${PIP[@]}" -q -r "$REPO/requirements/runtime.txt" -r "$REPO/requirements/tests.txt"

say "mmdat (editable)"
"${PIP[@]}" -q --no-deps --no-build-isolation -e "$REPO"

say "verify imports"
verify
rm -f "$VENV"/.mmdat-env-*
touch "$stamp"
step="done"
