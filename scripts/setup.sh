#!/usr/bin/env bash
# One-command environment for online3r_ros.
#
#   bash scripts/setup.sh                   # pip-only: .venv/ with ROS 2 Kilted wheels, torch, deps, project
#   bash scripts/setup.sh --python-deps-only  # ROS 2 distro sourced: only the non-ROS Python deps (colcon path)
#
# Without a sourced ROS 2 distro it creates .venv/ at the repository root with: ROS 2 Kilted rclpy + Fast
# DDS and the message packages (PyPI wheels), tf2_msgs built from its .msg definitions into the venv,
# torch (CPU build unless a torch is already in the venv, e.g. a CUDA one, which is kept), the Python
# dependencies (scripts/requirements.txt), asmk + faiss-cpu, open3d-cpu (optional: a failure is a warning)
# and the project in development mode. Environment variables for the built interfaces are set by a .pth
# file in the venv (every .venv/bin/python) and by .venv/bin/activate (shells).
#
# With a ROS 2 distro sourced (ROS_DISTRO set), ROS packages come from the distro and are built by colcon
# (see README.md); this script then switches to --python-deps-only and never installs ROS wheels.
#
# Idempotent: a stamp keyed on a hash of this script and the requirement files makes a repeated run
# finish in seconds. Options:
#   --python-deps-only  skip the ROS wheels and the tf2_msgs build (automatic when ROS_DISTRO is set)
#   --no-open3d         do not try to install open3d-cpu
#   --force             ignore the stamp and re-check every step
# Environment: PYTHON (interpreter used to create the venv; default python3.11, else python3),
#   ONLINE3R_VENV (venv folder; default <repo>/.venv), TORCH_VERSION (default 2.13.0),
#   TORCH_INDEX_URL (e.g. https://download.pytorch.org/whl/cpu to force the CPU build from PyTorch's index).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SCRIPTS="$REPO/scripts"
VENV=${ONLINE3R_VENV:-$REPO/.venv}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
OPEN3D_VERSION=0.20.0
ASMK_VERSION=0.1.1
MIN_PY_MINOR=11

MODE=full
WANT_OPEN3D=1
FORCE=0
for arg in "$@"; do
  case "$arg" in
    --python-deps-only) MODE=python-deps-only ;;
    --no-open3d) WANT_OPEN3D=0 ;;
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,24p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "[setup] ERROR: unknown option '$arg' (see --help)" >&2; exit 2 ;;
  esac
done

T_START=$(date +%s)
T_PHASE=$T_START
log() { echo "[setup] $*"; }
die() { echo "[setup] ERROR: $*" >&2; exit 1; }
warn() {
  echo "" >&2
  echo "[setup] ############################################################################" >&2
  echo "[setup] WARNING: $*" >&2
  echo "[setup] ############################################################################" >&2
  echo "" >&2
}
phase_done() {  # phase_done <name>: print how long the phase took
  local now
  now=$(date +%s)
  log "phase '$1' took $((now - T_PHASE)) s"
  T_PHASE=$now
}
is_root() { [[ $(id -u) -eq 0 ]]; }
have_lib() {  # have_lib <soname>: is a shared library of that name known to the dynamic linker?
  { ldconfig -p 2>/dev/null || /sbin/ldconfig -p 2>/dev/null; } | grep -qF "$1" && return 0
  compgen -G "/usr/lib/x86_64-linux-gnu/$1*" >/dev/null || compgen -G "/lib/x86_64-linux-gnu/$1*" >/dev/null
}

# --------------------------------------------------------------------------------------------------
# Mode: is a ROS 2 distro sourced?
# --------------------------------------------------------------------------------------------------
if [[ -n "${ROS_DISTRO:-}" && $MODE == full ]]; then
  cat <<EOF
[setup] ROS 2 '${ROS_DISTRO}' is sourced in this shell. Its rclpy and message packages are used, built
[setup] by colcon; the pip ROS wheels and the local tf2_msgs build are NOT installed (that would give
[setup] two ROS installations). Switching to --python-deps-only. The colcon path (README.md), from your
[setup] workspace with this repository under src/:
[setup]   rosdep install --from-paths src --ignore-src -y
[setup]   source <repo>/.venv/bin/activate && python -m colcon build --symlink-install
[setup]   source install/setup.bash && ros2 run online3r_ros online3r --help
[setup] For the pip-only environment instead, run this script from a shell without ROS sourced.
EOF
  MODE=python-deps-only
fi

# --------------------------------------------------------------------------------------------------
# Interpreter and system prerequisites
# --------------------------------------------------------------------------------------------------
if [[ -n "${PYTHON:-}" ]]; then
  BASE_PY=$PYTHON
elif [[ $MODE == python-deps-only ]]; then
  BASE_PY=python3  # must be the interpreter the ROS distro was built for
elif command -v python3.11 >/dev/null; then
  BASE_PY=python3.11
else
  BASE_PY=python3
fi
command -v "$BASE_PY" >/dev/null || die "Python interpreter '$BASE_PY' not found (set PYTHON=/path/to/python3.11)"
"$BASE_PY" -c "import sys; sys.exit(0 if sys.version_info >= (3, $MIN_PY_MINOR) else 1)" \
  || die "$BASE_PY is Python $("$BASE_PY" -c 'import sys; print(sys.version.split()[0])'); 3.$MIN_PY_MINOR+ is required (set PYTHON=...)"
[[ $(uname -m) == x86_64 ]] || warn "untested architecture $(uname -m): the pinned wheels exist for x86_64"

STAMP="$VENV/.online3r_setup.stamp"
STAMP_KEY=$(
  {
    echo "mode=$MODE open3d=$WANT_OPEN3D torch=$TORCH_VERSION python=$("$BASE_PY" -c 'import sys; print(sys.version)')"
    cat "$SCRIPTS/setup.sh" "$SCRIPTS/build_tf2_msgs.sh" "$SCRIPTS/check_env.py" "$SCRIPTS"/requirements*.txt
    find "$SCRIPTS/tf2_msgs" -type f | LC_ALL=C sort | xargs cat
    cat "$REPO/setup.py" "$REPO/setup.cfg" "$REPO/pyproject.toml"
  } | sha256sum | cut -d' ' -f1
)

# Quick exit: nothing changed since the last successful run and the venv still works.
if [[ $FORCE -eq 0 && -f "$STAMP" && "$(cat "$STAMP")" == "$STAMP_KEY" ]]; then
  check='import torch, numpy, cv2, scipy, evo, rosbags, faiss, asmk, online3r_ros'
  [[ $MODE == full ]] && check="$check, rclpy, sensor_msgs.msg, tf2_msgs.msg"
  if "$VENV/bin/python" -c "$check" 2>/dev/null; then
    log "environment in $VENV is up to date (mode $MODE; stamp matches). Use --force to re-check every step."
    exit 0
  fi
  log "stamp matches but the quick import check failed: re-checking every step"
fi

# Build tools: cmake/make/c++ for the tf2_msgs build and the asmk Cython extension; Python headers and
# venv support of the base interpreter (Debian splits them out of its python3 package).
missing_pkgs=()
command -v cmake >/dev/null || missing_pkgs+=(cmake)
command -v make >/dev/null || missing_pkgs+=(make)
command -v c++ >/dev/null || missing_pkgs+=(g++)
py_minor=$("$BASE_PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
"$BASE_PY" -c 'import ensurepip' 2>/dev/null || missing_pkgs+=("python${py_minor}-venv")
"$BASE_PY" -c 'import os, sysconfig, sys; sys.exit(not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  || missing_pkgs+=("python${py_minor}-dev")
if [[ ${#missing_pkgs[@]} -gt 0 ]]; then
  if is_root && command -v apt-get >/dev/null; then
    log "installing system packages with apt-get: ${missing_pkgs[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing_pkgs[@]}" \
      || die "apt-get could not install ${missing_pkgs[*]}"
  else
    die "missing system packages: ${missing_pkgs[*]}. Install them first, e.g. sudo apt-get install ${missing_pkgs[*]}"
  fi
fi
phase_done prerequisites

# --------------------------------------------------------------------------------------------------
# Virtual environment
# --------------------------------------------------------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
  venv_flags=()
  # On the colcon path the venv must see the distro's Python packages (colcon, numpy built for ROS).
  [[ $MODE == python-deps-only ]] && venv_flags+=(--system-site-packages)
  log "creating $VENV with $BASE_PY ${venv_flags[*]:-}"
  "$BASE_PY" -m venv "${venv_flags[@]}" "$VENV" \
    || die "'$BASE_PY -m venv' failed (Debian: apt-get install python3-venv)"
fi
"$VENV/bin/python" -c 'import sys' 2>/dev/null \
  || die "$VENV/bin/python does not run (venv moved or its base interpreter removed?): delete $VENV and re-run"
# One venv, one mode: a pip-only venv holds ROS wheels, a colcon-path venv sees the distro's packages.
MODE_FILE="$VENV/.online3r_mode"
if [[ -f "$MODE_FILE" && "$(cat "$MODE_FILE")" != "$MODE" ]]; then
  die "$VENV was set up in mode '$(cat "$MODE_FILE")', this run is '$MODE' (ROS_DISTRO=${ROS_DISTRO:-unset}). Use a shell with the same ROS setup, or delete $VENV and re-run."
fi
echo "$MODE" >"$MODE_FILE"
# A colcon workspace must not crawl the venv.
touch "$VENV/COLCON_IGNORE"
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)
pip_run() {  # pip, minus the harmless "Location ... is ignored" lines that some pip configurations print
  set +e
  "${PIP[@]}" "$@" 2>&1 | grep -v 'is ignored: it is neither a file nor a directory'
  local rc=${PIPESTATUS[0]}
  set -e
  return "$rc"
}
SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
phase_done venv

# On the colcon path the distro's message modules are compiled against the distro's numpy: keep it (a pip
# constraint on every install below). (setuptools cannot be kept: torch 2.13 needs setuptools >= 77.)
keep_args=()
if [[ $MODE == python-deps-only ]]; then
  keep_file="$VENV/.online3r-keep-constraints.txt"
  : >"$keep_file"
  for mod in numpy; do
    if version=$("$PY" -c "import $mod; print($mod.__version__)" 2>/dev/null); then
      echo "$mod==$version" >>"$keep_file"
      log "keeping the distro's $mod $version"
    fi
  done
  keep_args=(-c "$keep_file")
fi

# --------------------------------------------------------------------------------------------------
# torch: keep an importable torch (e.g. a CUDA build the user installed), else install the pinned one.
# --------------------------------------------------------------------------------------------------
if torch_info=$("$PY" -c 'import torch; print(torch.__version__, "cuda" if torch.version.cuda else "cpu")' 2>/dev/null); then
  log "keeping the torch already in the venv: $torch_info"
else
  torch_args=("torch==$TORCH_VERSION" "${keep_args[@]}")
  [[ -n "${TORCH_INDEX_URL:-}" ]] && torch_args+=(--index-url "$TORCH_INDEX_URL")
  log "installing ${torch_args[*]}"
  pip_run install "${torch_args[@]}" || die "pip could not install torch==$TORCH_VERSION"
fi
phase_done torch

# --------------------------------------------------------------------------------------------------
# Python dependencies (+ ROS 2 wheels in full mode)
# --------------------------------------------------------------------------------------------------
req_args=(-r "$SCRIPTS/requirements.txt")
if [[ $MODE == full ]]; then
  req_args+=(-r "$SCRIPTS/requirements-ros.txt")
else
  # Requirements minus what the distro keeps (see keep_args above).
  grep -v -E '^numpy([<>=!~ ;]|$)' "$SCRIPTS/requirements.txt" >"$VENV/.online3r-requirements.txt"
  req_args=(-r "$VENV/.online3r-requirements.txt")
fi
log "installing Python dependencies (${MODE})"
pip_run install "${req_args[@]}" "${keep_args[@]}" || die "pip could not install the requirements (see the error above)"
phase_done python-deps

# asmk: an sdist with a Cython extension; built against the venv's numpy/Cython/faiss (no isolation, so
# nothing is downloaded twice and the build does not depend on the latest numpy on PyPI).
if "$PY" -c 'import asmk, asmk.hamming' 2>/dev/null; then
  log "asmk already installed"
else
  log "building asmk==$ASMK_VERSION (Cython extension)"
  pip_run install --no-build-isolation --no-deps "asmk==$ASMK_VERSION" "${keep_args[@]}" \
    || die "asmk==$ASMK_VERSION did not build (needs a C compiler, cython, numpy, faiss-cpu in the venv)"
  "$PY" -c 'import asmk, asmk.hamming' || die "asmk installed but 'import asmk.hamming' fails"
fi
phase_done asmk

# open3d-cpu: only the comparison benchmark uses it, so any failure here is a loud warning, not fatal.
if [[ $WANT_OPEN3D -eq 1 ]]; then
  if "$PY" -c 'import open3d' 2>/dev/null; then
    log "open3d already installed"
  else
    o3d_ok=1
    o3d_missing=()
    have_lib 'libusb-1.0.so.0' || o3d_missing+=(libusb-1.0-0)
    have_lib 'libgomp.so.1' || o3d_missing+=(libgomp1)
    if [[ ${#o3d_missing[@]} -gt 0 ]]; then
      if is_root && command -v apt-get >/dev/null; then
        log "installing open3d's system libraries with apt-get: ${o3d_missing[*]}"
        { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
            && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${o3d_missing[@]}"; } \
          || { o3d_ok=0; warn "apt-get could not install ${o3d_missing[*]}: open3d-cpu skipped"; }
      else
        o3d_ok=0
        warn "open3d-cpu needs the system libraries ${o3d_missing[*]} (sudo apt-get install ${o3d_missing[*]}); skipped. Only benchmarks/bench_vs_open3d.py needs it."
      fi
    fi
    if [[ $o3d_ok -eq 1 ]]; then
      # Constrained to the versions already installed so open3d cannot move numpy & co.
      o3d_constraints=$(mktemp)
      "${PIP[@]}" freeze --exclude-editable 2>/dev/null | grep -E '^(numpy|scipy|matplotlib|pillow|torch|setuptools)==' >"$o3d_constraints" || true
      if pip_run install "open3d-cpu==$OPEN3D_VERSION" -c "$o3d_constraints" && "$PY" -c 'import open3d'; then
        log "open3d-cpu $OPEN3D_VERSION installed"
      else
        warn "open3d-cpu==$OPEN3D_VERSION could not be installed or imported; only benchmarks/bench_vs_open3d.py needs it. Everything else works."
      fi
      rm -f "$o3d_constraints"
    fi
  fi
fi
phase_done open3d

# --------------------------------------------------------------------------------------------------
# ROS interfaces that have no wheel (tf2_msgs), and the environment variables they need
# --------------------------------------------------------------------------------------------------
if [[ $MODE == full ]]; then
  tf2_key=$(find "$SCRIPTS/tf2_msgs" "$SCRIPTS/build_tf2_msgs.sh" "$SCRIPTS/requirements-rosidl-build.txt" -type f \
    | LC_ALL=C sort | xargs cat | sha256sum | cut -d' ' -f1)
  tf2_stamp="$VENV/.online3r-build/tf2_msgs.stamp"
  if [[ -f "$tf2_stamp" && "$(cat "$tf2_stamp")" == "$tf2_key" ]] \
    && "$PY" -c 'from tf2_msgs.msg import TFMessage, TF2Error' 2>/dev/null; then
    log "tf2_msgs already built"
  else
    log "building tf2_msgs into $VENV"
    bash "$SCRIPTS/build_tf2_msgs.sh" "$VENV"
    echo "$tf2_key" >"$tf2_stamp"
  fi

  # Every interpreter of the venv: the venv prefix on AMENT_PREFIX_PATH (ament index of the wheels and
  # of tf2_msgs). LD_LIBRARY_PATH (<venv>/lib) is set by ros_wheels_bootstrapper.pth, which re-executes
  # the interpreter once with it; this file sorts before it, so the re-executed process inherits both.
  cat >"$SITE/online3r_ros_env.pth" <<'EOF'
import os, sys; _p = [x for x in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if x]; os.environ["AMENT_PREFIX_PATH"] = os.pathsep.join(_p if sys.prefix in _p else [sys.prefix] + _p)
EOF

  # Shells (`source .venv/bin/activate`): the same variables for non-Python tools (e.g. the fastdds CLI).
  if ! grep -q '>>> online3r_ros environment >>>' "$VENV/bin/activate"; then
    cat >>"$VENV/bin/activate" <<'EOF'

# >>> online3r_ros environment >>> (added by scripts/setup.sh)
case ":${AMENT_PREFIX_PATH:-}:" in *":$VIRTUAL_ENV:"*) ;; *) export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}" ;; esac
case ":${LD_LIBRARY_PATH:-}:" in *":$VIRTUAL_ENV/lib:"*) ;; *) export LD_LIBRARY_PATH="$VIRTUAL_ENV/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;; esac
# <<< online3r_ros environment <<<
EOF
  fi
fi
phase_done ros-interfaces

# --------------------------------------------------------------------------------------------------
# The project itself, in development mode
# --------------------------------------------------------------------------------------------------
log "installing online3r_ros in development mode"
pip_run install --quiet --no-deps --no-build-isolation -e "$REPO" \
  || die "pip install -e $REPO failed"
phase_done project

# --------------------------------------------------------------------------------------------------
# Final check
# --------------------------------------------------------------------------------------------------
if [[ $MODE == full ]]; then
  # Imports of everything + tf2_msgs type hashes equal to upstream (scripts/check_env.py).
  "$PY" "$SCRIPTS/check_env.py" || die "environment check failed (see above): $PY $SCRIPTS/check_env.py"
  # Real rclpy over Fast DDS between two processes (localhost only, random domain id).
  "$PY" "$SCRIPTS/check_env.py" --dds-only \
    || warn "a TFMessage did not travel between two processes over Fast DDS on this machine; the ROS tests will fail. Check: $PY $SCRIPTS/check_env.py --dds"
else
  check='import torch, numpy, cv2, scipy, yaml, safetensors, evo, rosbags, faiss, asmk.hamming, online3r_ros'
  "$PY" -c "$check" || die "final import check failed: $check"
fi
echo "$STAMP_KEY" >"$STAMP"
phase_done check

log "done in $(( $(date +%s) - T_START )) s. Environment: $VENV (mode $MODE)"
log "  torch: $("$PY" -c 'import torch; print(torch.__version__, "(CUDA available)" if torch.cuda.is_available() else "(CPU)")')"
if [[ $MODE == full ]]; then
  log "  run:   $VENV/bin/online3r demo      tests: $VENV/bin/python -m pytest -q"
else
  log "  next:  source $VENV/bin/activate, then build with colcon from your workspace (README.md, 'With a ROS 2 distro')"
fi
