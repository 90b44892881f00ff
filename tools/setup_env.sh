#!/usr/bin/env bash
# Create or update the project venv (.venv): pinned Python packages and ROS 2 kilted wheels,
# our interfaces built with rosidl, the Fast DDS profile, and gmm_perception itself (editable).
# Idempotent and fast when nothing changed: each stage re-runs only when its inputs changed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GMM_PERCEPTION_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
STAMPS="$VENV/.gmm_perception_stamps"

log() { printf '[setup] %s\n' "$*"; }
digest() { cat "$@" | sha256sum | cut -c1-16; }
stage_is_current() { [ -f "$STAMPS/$1" ] && [ "$(cat "$STAMPS/$1")" = "$2" ]; }
mark_stage() { mkdir -p "$STAMPS"; echo "$2" > "$STAMPS/$1"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

# 1. System packages: open3d needs libusb-1.0; rosidl needs cmake and a C/C++ compiler.
missing=()
# (grep reads all of ldconfig's output: `grep -q` may exit first, and under pipefail
# ldconfig's SIGPIPE then reads as a missing library.)
ldconfig -p 2>/dev/null | grep 'libusb-1.0.so.0' >/dev/null || missing+=(libusb-1.0-0)
command -v cmake >/dev/null || missing+=(cmake)
command -v g++ >/dev/null || missing+=(g++)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
    || { echo "[setup] error: need root (or sudo) to apt-get install ${missing[*]}" >&2; exit 1; }
fi

# 2. The venv and its pinned packages.
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
# pip's notes about this machine's local wheel mirrors are noise: keep everything else.
pip_quiet() { "$VENV/bin/python" -m pip --disable-pip-version-check "$@" 2> >(grep -v "^WARNING: Location" >&2); }
key=$(digest "$ROOT/requirements.txt")
if ! stage_is_current requirements "$key"; then
  log "installing requirements.txt (first time: a few minutes)"
  pip_quiet install -q --upgrade pip
  pip_quiet install -q -r "$ROOT/requirements.txt"
  rm -f "$STAMPS/interfaces" "$STAMPS/ros-launch"  # new wheels restore their unpatched cmake exports
  mark_stage requirements "$key"
fi

# 3. Our interfaces (and tf2_msgs) generated with rosidl and installed into the venv.
key=$(digest "$ROOT"/msg/*.msg "$ROOT"/gmm_perception_msgs/* "$ROOT/tools/build_interfaces.py")
if ! stage_is_current interfaces "$key"; then
  log "building interfaces with rosidl"
  "$VENV/bin/python" "$ROOT/tools/build_interfaces.py"
  mark_stage interfaces "$key"
fi

# 4. gmm_perception itself, editable, and the Fast DDS profile for every Python of the venv:
#    large best-effort clouds need the shared-memory transport (see config/fastdds_shm.xml).
#    Then registered in the venv's ament index as colcon lays out an install (share/gmm_perception,
#    the executables under lib/gmm_perception, AMENT_PREFIX_PATH naming the venv): see tools/ament_index.py.
key=$(digest "$ROOT/setup.py" "$ROOT/gmm_perception/node_registry.py" "$ROOT/tools/setup_env.sh" \
             "$ROOT/tools/ament_index.py" <(echo "$ROOT"))
if ! stage_is_current package "$key"; then
  log "installing gmm_perception (editable)"
  pip_quiet install -q --no-deps --no-build-isolation -e "$ROOT"
  site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  printf "import os; os.environ.setdefault('FASTDDS_DEFAULT_PROFILES_FILE', %s)\n" \
    "'$ROOT/config/fastdds_shm.xml'" > "$site/gmm_perception_dds.pth"
  "$VENV/bin/python" "$ROOT/tools/ament_index.py"
  mark_stage package "$key"
fi

# 5. ROS 2 launch from the upstream sources beside the checkout (../shared/ros-launch in
#    development and CI, or $GMM_PERCEPTION_ROS_LAUNCH): composition_interfaces built with rosidl
#    and launch, launch_ros, launch_xml, launch_yaml put on the venv's path (tools/ros_launch.py).
#    Without that folder the launch files need a ROS install; the rest of the venv works as is.
if [ -n "${GMM_PERCEPTION_ROS_LAUNCH:-}" ]; then
  ros_launch="$GMM_PERCEPTION_ROS_LAUNCH"
  [ -d "$ros_launch" ] || { echo "[setup] error: GMM_PERCEPTION_ROS_LAUNCH=$ros_launch is not a folder" >&2; exit 1; }
else
  ros_launch="$ROOT/../shared/ros-launch"
fi
if [ -d "$ros_launch" ]; then
  ros_launch="$(cd "$ros_launch" && pwd -P)"
  key=$(digest "$ROOT/tools/ros_launch.py" "$ROOT/tools/build_interfaces.py" \
               "$ros_launch"/composition_interfaces/{CMakeLists.txt,package.xml} \
               "$ros_launch"/composition_interfaces/srv/*.srv <(echo "$ros_launch"))
  if ! stage_is_current ros-launch "$key"; then
    log "making launch usable from $ros_launch (composition_interfaces with rosidl)"
    "$VENV/bin/python" "$ROOT/tools/ros_launch.py" "$ros_launch"
    mark_stage ros-launch "$key"
  fi
else
  rm -f "$VENV"/lib/python3*/site-packages/gmm_perception_ros_launch.pth "$STAMPS/ros-launch"
  log "no ../shared/ros-launch: launch files need a ROS install here (skipped)"
fi
log "ready: $VENV"
