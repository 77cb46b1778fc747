#!/usr/bin/env bash
# Build the tf2_msgs interfaces (TFMessage, TF2Error, FrameGraph) from scripts/tf2_msgs/ with the ROS 2
# rosidl wheels and install them INTO the virtual environment's prefix, next to the message wheels:
#   <venv>/lib/python3.X/site-packages/tf2_msgs   (Python module, found like any installed package)
#   <venv>/lib/libtf2_msgs__*.so                  (typesupport libraries; <venv>/lib is put on
#                                                   LD_LIBRARY_PATH by the ros-wheels-bootstrapper .pth)
#   <venv>/share/tf2_msgs, <venv>/share/ament_index (ament index entries, found via AMENT_PREFIX_PATH)
#
# Usage: scripts/build_tf2_msgs.sh <venv-dir>      (called by scripts/setup.sh; safe to re-run)
# Needs: cmake >= 3.20, a C/C++ compiler, make, and the venv from scripts/setup.sh.
set -euo pipefail

die() { echo "[build_tf2_msgs] ERROR: $*" >&2; exit 1; }
log() { echo "[build_tf2_msgs] $*"; }
pip_quiet_install() {  # pip install -q, minus the harmless "Location ... is ignored" lines of some configs
  set +e
  "$PY" -m pip install --quiet --disable-pip-version-check "$@" 2>&1 \
    | grep -v 'is ignored: it is neither a file nor a directory'
  local rc=${PIPESTATUS[0]}
  set -e
  return "$rc"
}

[[ $# -eq 1 ]] || die "usage: $0 <venv-dir>"
VENV=$(cd "$1" && pwd) || die "venv folder '$1' does not exist"
SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC="$SCRIPTS/tf2_msgs"
PY="$VENV/bin/python"
[[ -x "$PY" ]] || die "$PY not found: create the venv first (bash scripts/setup.sh)"
[[ -f "$SRC/package.xml" ]] || die "interface sources missing: $SRC"
for tool in cmake make c++ cc; do
  command -v "$tool" >/dev/null || die "'$tool' not found on PATH (Debian: apt-get install cmake g++ make)"
done

log "installing the rosidl build tools into $VENV"
pip_quiet_install -r "$SCRIPTS/requirements-rosidl-build.txt" \
  || die "pip could not install the rosidl build wheels (scripts/requirements-rosidl-build.txt)"

# Interpreter facts the wheels' CMake targets need (their baked-in /opt/python/... paths are replaced).
PY_INCLUDE=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
NUMPY_INCLUDE=$("$PY" -c 'import numpy; print(numpy.get_include())')
[[ -f "$PY_INCLUDE/Python.h" ]] || die "Python.h not found in $PY_INCLUDE (install the python3-dev package)"

# Incremental: a re-run rebuilds only what changed, and `make install` leaves identical, up-to-date files
# alone (no rewriting of libraries other processes of the venv may have loaded).
BUILD="$VENV/.online3r-build/tf2_msgs"
mkdir -p "$BUILD"

# rosidl finds the generators and typesupports through the ament index of the venv prefix.
export AMENT_PREFIX_PATH="$VENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
export PATH="$VENV/bin:$PATH"
export LD_LIBRARY_PATH="$VENV/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1  # LD_LIBRARY_PATH is already set; skip the bootstrapper re-exec

log "configuring (build dir $BUILD)"
cmake -S "$SRC" -B "$BUILD" \
  -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_INSTALL_PREFIX="$VENV" \
  -DCMAKE_PREFIX_PATH="$VENV" \
  -DPython3_EXECUTABLE="$PY" \
  -DPython3_FIND_VIRTUALENV=ONLY \
  -DONLINE3R_PYTHON_INCLUDE_DIR="$PY_INCLUDE" \
  -DONLINE3R_NUMPY_INCLUDE_DIR="$NUMPY_INCLUDE" \
  -DBUILD_TESTING=OFF >"$BUILD/configure.log" 2>&1 \
  || { tail -n 40 "$BUILD/configure.log" >&2; die "cmake configure failed (full log: $BUILD/configure.log)"; }

log "building and installing into $VENV"
JOBS=$(nproc 2>/dev/null || echo 2)
cmake --build "$BUILD" --target install -- -j"$JOBS" >"$BUILD/build.log" 2>&1 \
  || { tail -n 40 "$BUILD/build.log" >&2; die "build failed (full log: $BUILD/build.log)"; }

log "checking that tf2_msgs imports from a fresh interpreter"
env -u _ROS_WHEELS_BOOTSTRAP_COMPLETE -u LD_LIBRARY_PATH -u AMENT_PREFIX_PATH "$PY" -c \
  'from tf2_msgs.msg import TFMessage, TF2Error; from tf2_msgs.srv import FrameGraph; TFMessage()' \
  || die "tf2_msgs was built but does not import from $PY"
"$PY" "$SCRIPTS/check_env.py" --hashes-only \
  || die "the built tf2_msgs type hashes differ from upstream: real tf2 listeners would reject them"
log "done"
