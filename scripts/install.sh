#!/usr/bin/env bash
# Install edgekit into ./.venv with the torch build that fits this host, then the package itself.
#   bash scripts/install.sh          # runtime only
#   bash scripts/install.sh dev      # plus the test tools (pytest, ruff)
# A CPU-only host gets PyTorch's CPU wheel: a plain `pip install torch` would pull a multi-GB
# CUDA build there. A Jetson reuses the JetPack torch that NVIDIA's images ship (system site
# packages); a desktop NVIDIA GPU gets the regular CUDA wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${EDGEKIT_VENV:-.venv}
PY=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
extras=${1:-}

if [ -f /etc/nv_tegra_release ]; then
  kind=jetson
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  kind=gpu
else
  kind=cpu
fi
case $kind in
  jetson) extras=${extras:+$extras,}jetson ;;
  gpu) extras=${extras:+$extras,}gpu ;;
esac

if [ ! -x "$VENV/bin/python" ]; then
  if [ $kind = jetson ]; then "$PY" -m venv --system-site-packages "$VENV"; else "$PY" -m venv "$VENV"; fi
fi
pip=("$VENV/bin/python" -m pip --disable-pip-version-check)

if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  echo "edgekit: installing torch $TORCH_VERSION for a $kind host" >&2
  case $kind in
    cpu)
      cpu_index=https://download.pytorch.org/whl/cpu
      if "$VENV/bin/python" -c "import urllib.request as u; u.urlopen('$cpu_index/torch/', timeout=5)" >/dev/null 2>&1
      then
        "${pip[@]}" install --quiet "torch==$TORCH_VERSION" --index-url "$cpu_index"
      else
        # Offline mirrors (and this project's build machines) serve the CPU build under the
        # plain version; check what arrived rather than trusting it.
        echo "edgekit: $cpu_index unreachable; using the configured package index" >&2
        "${pip[@]}" install --quiet "torch==$TORCH_VERSION"
        if "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.version.cuda is None)"; then
          echo "edgekit: warning: the configured index gave a CUDA build of torch on a CPU-only host" >&2
        fi
      fi ;;
    gpu) "${pip[@]}" install --quiet "torch==$TORCH_VERSION" ;;
    jetson)
      echo "edgekit: no torch found; install NVIDIA's JetPack torch wheel (or use an l4t-pytorch image) first" >&2
      exit 1 ;;
  esac
fi
echo "edgekit: installing edgekit${extras:+[$extras]}" >&2
"${pip[@]}" install --quiet -e ".${extras:+[$extras]}"
"$VENV/bin/edgekit" --version
