#!/usr/bin/env bash
# Installs vimgeo on a companion computer (or into a staging root): binary, config, camera calibration, model,
# tile cache, ONNX Runtime libraries, systemd unit, udev rules, sysusers/tmpfiles entries.
#
#   install.sh [--root DIR] --binary BIN --config vimgeo.toml --model M.onnx --cache X.vgc --calib CAL.toml
#              [--ort-lib DIR] [--verify-with HOSTBIN] [--jetson] [--systemd-version N]
#
#   --root DIR             install under DIR instead of / (a staging root, an image being built); default /
#   --binary BIN           the vimgeo executable (aarch64 for a Jetson)
#   --config FILE          onboard config, installed as /etc/vimgeo/vimgeo.toml
#   --model M.onnx         the model; its manifest M.json must sit next to it
#   --cache X.vgc          the tile cache built with that model (`vimgeo cache build`)
#   --calib FILE           camera calibration, installed as /etc/vimgeo/camera.toml
#   --ort-lib DIR          folder with libonnxruntime.so* (and its provider libraries) -> /opt/vimgeo/lib,
#                          and /etc/vimgeo/vimgeo.env points ORT_DYLIB_PATH at it
#   --verify-with HOSTBIN  a vimgeo that runs here, to check model against cache when BIN cannot run here
#   --verify-in-shell      compare manifest and cache header in shell even when a vimgeo could run
#   --jetson               also install the Jetson GPU device drop-in (auto when DIR/etc/nv_tegra_release exists)
#   --systemd-version N    the target's systemd version (default: asked from systemctl when DIR is /; else
#                          read from DIR's libsystemd-shared; unknown = assume < 254)
#
# Before touching anything it checks that the cache was built with the model (`vimgeo cache verify CACHE
# --model M` with BIN, with --verify-with, with BIN through qemu-aarch64, or, when none can run, by comparing the
# manifest's onnx_sha256 with the cache's model_sha256 itself) and refuses a mismatched pair.
# Idempotent: a file is written (atomically: temp file + rename) only when its content or mode differs; each
# is reported `updated` or `unchanged`; a second run with the same inputs changes nothing.
# On / and only when something changed: systemd-sysusers, systemd-tmpfiles, daemon-reload, udev reload.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROG=install.sh

die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 1
}
note() { printf '%s: %s\n' "$PROG" "$*"; }
usage() {
    sed -n '2,29p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

root=/
binary="" config="" model="" cache="" calib="" ort_lib="" verify_with="" jetson=0 systemd_version="" in_shell=0
while (($#)); do
    case "$1" in
        --root | --binary | --config | --model | --cache | --calib | --ort-lib | --verify-with | --systemd-version)
            (($# >= 2)) || die "$1 needs a value"
            case "$1" in
                --root) root=$2 ;;
                --binary) binary=$2 ;;
                --config) config=$2 ;;
                --model) model=$2 ;;
                --cache) cache=$2 ;;
                --calib) calib=$2 ;;
                --ort-lib) ort_lib=$2 ;;
                --verify-with) verify_with=$2 ;;
                --systemd-version) systemd_version=$2 ;;
            esac
            shift 2
            ;;
        --jetson)
            jetson=1
            shift
            ;;
        --verify-in-shell)
            in_shell=1
            shift
            ;;
        -h | --help) usage 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

# --- 1. inputs --------------------------------------------------------------------------------------------
for pair in "--binary:$binary" "--config:$config" "--model:$model" "--cache:$cache" "--calib:$calib"; do
    [[ -n "${pair#*:}" ]] || die "${pair%%:*} is required (see --help)"
    [[ -f "${pair#*:}" ]] || die "${pair%%:*} ${pair#*:}: no such file"
done
[[ -x "$binary" ]] || die "--binary $binary is not executable"
[[ "$model" == *.onnx ]] || die "--model $model: expected the .onnx file (its manifest .json sits next to it)"
manifest="${model%.onnx}.json"
[[ -f "$manifest" ]] || die "model manifest $manifest (next to --model $model) not found"
if [[ -n "$ort_lib" ]]; then
    [[ -d "$ort_lib" ]] || die "--ort-lib $ort_lib is not a folder"
    compgen -G "$ort_lib/libonnxruntime.so*" >/dev/null || die "--ort-lib $ort_lib holds no libonnxruntime.so*"
fi
if [[ -n "$verify_with" && ! -x "$verify_with" ]]; then die "--verify-with $verify_with is not executable"; fi
[[ -d "$root" ]] || die "--root $root is not a folder"
root=$(cd "$root" && pwd)
[[ "$root" == / ]] && prefix="" || prefix="$root"
for src in unit:systemd/vimgeo.service rules:udev/99-vimgeo.rules sysusers:sysusers.d/vimgeo.conf \
    tmpfiles:tmpfiles.d/vimgeo.conf; do
    [[ -f "$HERE/${src#*:}" ]] || die "deploy file $HERE/${src#*:} is missing (run install.sh from deploy/ or the bundle)"
done

# --- 2. the model and the cache must belong together: checked before anything is written -----------------
elf_machine() { od -An -tx1 -j18 -N2 "$1" 2>/dev/null | tr -d ' \n'; }
host_machine() {
    case "$(uname -m)" in
        x86_64) echo 3e00 ;;
        aarch64 | arm64) echo b700 ;;
        *) echo unknown ;;
    esac
}
json_sha() { # json_sha KEY TEXT -> the 64-hex value of "KEY": "..." in TEXT
    grep -oE "\"$1\"[[:space:]]*:[[:space:]]*\"[0-9a-fA-F]{64}\"" <<<"$2" | grep -oE '[0-9a-fA-F]{64}' | head -n1 |
        tr 'A-F' 'a-f'
}
shell_check() {
    # The cache is a safetensors file: u64 little-endian header length, then a JSON header whose __metadata__
    # records model_sha256 = the manifest's onnx_sha256 of the model that built it.
    local len header cache_sha manifest_sha model_sha
    len=$(od -An -tu8 --endian=little -j0 -N8 "$cache" | tr -d ' ')
    [[ "$len" =~ ^[0-9]+$ && "$len" -gt 0 && "$len" -lt 100000000 ]] ||
        die "cache $cache is not a tile cache (no safetensors header)"
    header=$(tail -c +9 "$cache" | head -c "$len" | tr -d '\0')
    cache_sha=$(json_sha model_sha256 "$header")
    [[ -n "$cache_sha" ]] || die "cache $cache records no model_sha256: not a vimgeo tile cache"
    manifest_sha=$(json_sha onnx_sha256 "$(cat "$manifest")")
    [[ -n "$manifest_sha" ]] || die "manifest $manifest has no onnx_sha256"
    model_sha=$(sha256sum "$model" | cut -d' ' -f1)
    [[ "$model_sha" == "$manifest_sha" ]] ||
        die "model $model (sha256 $model_sha) is not the model its manifest $manifest describes ($manifest_sha); nothing installed"
    [[ "$cache_sha" == "$manifest_sha" ]] ||
        die "refusing a mismatched pair: cache $cache was built with the model of sha256 $cache_sha, but model $model is $manifest_sha; rebuild the cache with this model; nothing installed"
    note "model/cache check (manifest vs cache header, in shell): $model matches $cache"
}
checker=() how=""
if [[ $in_shell == 1 ]]; then
    :
elif [[ -n "$verify_with" ]]; then
    checker=("$verify_with") how="--verify-with $verify_with"
elif [[ "$(elf_machine "$binary")" == "$(host_machine)" ]]; then
    checker=("$binary") how="$binary"
elif [[ "$(elf_machine "$binary")" == b700 ]] && command -v qemu-aarch64 >/dev/null 2>&1 && [[ -d /usr/aarch64-linux-gnu ]]; then
    checker=(qemu-aarch64 -L /usr/aarch64-linux-gnu "$binary") how="qemu-aarch64 $binary"
elif [[ "$(elf_machine "$binary")" == b700 ]] && command -v qemu-aarch64-static >/dev/null 2>&1 && [[ -d /usr/aarch64-linux-gnu ]]; then
    checker=(qemu-aarch64-static -L /usr/aarch64-linux-gnu "$binary") how="qemu-aarch64-static $binary"
fi
if ((${#checker[@]})); then
    if ! out=$(RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0 RUST_LOG=warn "${checker[@]}" cache verify "$cache" --model "$model" 2>&1); then
        printf '%s\n' "$out" >&2
        die "refusing a mismatched or broken pair: cache $cache does not verify against model $model (checked with $how); nothing installed"
    fi
    note "model/cache check ($how): $out"
else
    [[ $in_shell == 1 ]] || note "no vimgeo that runs here (give --verify-with HOSTBIN): checking model and cache in shell"
    shell_check
fi

# --- 3. files ---------------------------------------------------------------------------------------------
updated=0 unchanged=0
# ensure_dir PATH MODE [OWNER:GROUP numeric]
ensure_dir() {
    local dir=$prefix$1 mode=$2 owner=${3:-}
    if [[ ! -d "$dir" ]]; then
        mkdir -p "$dir"
        chmod "$mode" "$dir"
        printf 'created   %s\n' "$1"
    elif [[ "$(stat -c %a "$dir")" != "${mode#0}" ]]; then
        chmod "$mode" "$dir"
        printf 'updated   %s (mode %s)\n' "$1" "$mode"
    fi
    if [[ -n "$owner" && "$(stat -c %u:%g "$dir")" != "$owner" ]]; then chown "$owner" "$dir"; fi
}
# put SRC DEST MODE: DEST (a path on the target) gets SRC's bytes and MODE, atomically, only if they differ.
put() {
    local src=$1 dest=$prefix$2 mode=$3 tmp
    if [[ -f "$dest" && ! -L "$dest" ]] && cmp -s "$src" "$dest"; then
        if [[ "$(stat -c %a "$dest")" == "${mode#0}" ]]; then
            printf 'unchanged %s\n' "$2"
            unchanged=$((unchanged + 1))
            return
        fi
        chmod "$mode" "$dest"
        printf 'updated   %s (mode %s)\n' "$2" "$mode"
        updated=$((updated + 1))
        return
    fi
    mkdir -p "$(dirname "$dest")"
    tmp=$(mktemp "$(dirname "$dest")/.vimgeo-install.XXXXXX")
    cp "$src" "$tmp"
    chmod "$mode" "$tmp"
    mv -f "$tmp" "$dest"
    printf 'updated   %s\n' "$2"
    updated=$((updated + 1))
}
# put_text DEST MODE TEXT
put_text() {
    local tmp
    tmp=$(mktemp)
    printf '%s' "$3" >"$tmp"
    put "$tmp" "$1" "$2"
    rm -f "$tmp"
}

ensure_dir /opt/vimgeo/bin 0755
ensure_dir /opt/vimgeo/lib 0755
ensure_dir /etc/vimgeo 0755
ensure_dir /var/lib/vimgeo 0755
ensure_dir /var/lib/vimgeo/models 0755
ensure_dir /var/lib/vimgeo/cache 0755

put "$binary" /opt/vimgeo/bin/vimgeo 0755
put "$config" /etc/vimgeo/vimgeo.toml 0644
put "$calib" /etc/vimgeo/camera.toml 0644
put "$model" "/var/lib/vimgeo/models/$(basename "$model")" 0644
put "$manifest" "/var/lib/vimgeo/models/$(basename "$manifest")" 0644
put "$cache" "/var/lib/vimgeo/cache/$(basename "$cache")" 0644
for name in "$(basename "$model")" "$(basename "$cache")"; do
    grep -qF "$name" "$config" || note "warning: config $config does not mention $name: check its model/cache paths"
done
if [[ -n "$ort_lib" ]]; then
    for lib in "$ort_lib"/libonnxruntime*.so*; do
        put "$lib" "/opt/vimgeo/lib/$(basename "$lib")" 0644
    done
    # Prefer the unversioned name when the folder has it, else the first versioned file.
    ort_main=$(cd "$ort_lib" && { ls libonnxruntime.so 2>/dev/null || ls libonnxruntime.so.* | head -n1; })
    put_text /etc/vimgeo/vimgeo.env 0644 "# Written by install.sh --ort-lib: the ONNX Runtime vimgeo loads (TensorRT/CUDA providers beside it).
ORT_DYLIB_PATH=/opt/vimgeo/lib/$ort_main
LD_LIBRARY_PATH=/opt/vimgeo/lib
"
fi
if [[ -f "$HERE/README.md" ]]; then put "$HERE/README.md" /opt/vimgeo/share/README.md 0644; fi

put "$HERE/systemd/vimgeo.service" /etc/systemd/system/vimgeo.service 0644
if [[ -z "$systemd_version" ]]; then
    if [[ -z "$prefix" ]] && command -v systemctl >/dev/null 2>&1; then
        systemd_version=$(systemctl --version | awk 'NR==1 {print $2}')
    else
        shared=$(compgen -G "$root/usr/lib/*/systemd/libsystemd-shared-*.so" || compgen -G "$root/usr/lib/systemd/libsystemd-shared-*.so" || true)
        systemd_version=$(sed -n 's/.*libsystemd-shared-\([0-9]*\).*/\1/p' <<<"${shared%%$'\n'*}")
    fi
fi
if [[ "$systemd_version" =~ ^[0-9]+$ && "$systemd_version" -ge 254 ]]; then
    put "$HERE/systemd/vimgeo.service.d/backoff.conf" /etc/systemd/system/vimgeo.service.d/backoff.conf 0644
else
    note "systemd ${systemd_version:-of unknown version (assumed < 254)}${systemd_version:+ < 254}: no exponential restart back-off, fixed RestartSec=2 (--systemd-version N overrides)"
fi
if [[ $jetson == 1 || -f "$root/etc/nv_tegra_release" ]]; then
    put "$HERE/systemd/vimgeo.service.d/jetson-gpu.conf" /etc/systemd/system/vimgeo.service.d/jetson-gpu.conf 0644
fi
put "$HERE/udev/99-vimgeo.rules" /etc/udev/rules.d/99-vimgeo.rules 0644
put "$HERE/sysusers.d/vimgeo.conf" /etc/sysusers.d/vimgeo.conf 0644
put "$HERE/tmpfiles.d/vimgeo.conf" /etc/tmpfiles.d/vimgeo.conf 0644

# --- 4. the service user and its writable dirs --------------------------------------------------------------
passwd_file=$root/etc/passwd
[[ -z "$prefix" ]] && passwd_file=/etc/passwd
if ! grep -q '^vimgeo:' "$passwd_file" 2>/dev/null; then
    if [[ -z "$prefix" ]]; then
        systemd-sysusers /etc/sysusers.d/vimgeo.conf
        note "created user vimgeo (systemd-sysusers)"
    # With --root, systemd 252 does not find a config file named on its command line: let it read the
    # root's sysusers.d (ours included), as the image's first boot would.
    elif systemd-sysusers --root "$root" >/dev/null 2>&1; then
        note "created user vimgeo in $root (systemd-sysusers --root)"
    else
        note "cannot run systemd-sysusers --root $root here (unprivileged?): user vimgeo will be created on first boot"
    fi
fi
owner=""
if entry=$(grep '^vimgeo:' "$passwd_file" 2>/dev/null); then
    IFS=: read -r _ _ uid gid _ <<<"$entry"
    if [[ $(id -u) == 0 ]]; then owner="$uid:$gid"; fi
fi
ensure_dir /var/lib/vimgeo/trt-cache 0750 "$owner"
ensure_dir /var/lib/vimgeo/state 0750 "$owner"

# --- 5. tell the running system --------------------------------------------------------------------------
if [[ -z "$prefix" && $updated -gt 0 ]]; then
    systemd-tmpfiles --create /etc/tmpfiles.d/vimgeo.conf
    systemctl daemon-reload
    udevadm control --reload
    udevadm trigger --subsystem-match=video4linux --subsystem-match=tty
    note "reloaded systemd and udev; start with: systemctl enable --now vimgeo"
fi
note "$updated updated, $unchanged unchanged (root $root)"
