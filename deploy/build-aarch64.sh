#!/usr/bin/env bash
# Builds the onboard vimgeo for aarch64 (Jetson) on an x86-64 Debian/Ubuntu machine, bundles it with what it
# needs at run time, and checks the aarch64 binary under qemu-aarch64 against the x86-64 build: both embed the
# same image with the tract engine and the largest per-component difference must stay below TOLERANCE.
#
#   deploy/build-aarch64.sh                 install what is missing, build, bundle, qemu check
#   MODEL=models/vimgeo-demo.onnx deploy/build-aarch64.sh
#   deploy/build-aarch64.sh --no-check      build and bundle only
#   deploy/build-aarch64.sh --check-only    qemu check of an existing build (no cargo)
#
# Environment (all optional):
#   MODEL       model bundled and used by the check (default models/vimgeo-demo.onnx, else the test fixture)
#   IMAGE       image the check embeds (default tests/fixtures/forest-edge.png)
#   HOST_BIN    x86-64 vimgeo for the reference embedding (default: `cargo build --release --no-default-features`,
#               the same features as the aarch64 binary, in the main target dir: target/release/vimgeo)
#   QEMU_CPU    CPU qemu emulates (default cortex-a76: ARMv8.2 with NEON and dotprod, no SVE, like the Jetson
#               Orin's Cortex-A78AE; qemu's default `max` has SVE2, which would send tract down kernels an
#               Orin never runs)
#   TOLERANCE   largest allowed |aarch64 - x86-64| per embedding component (default 1e-4)
#   STRIP       1 (default): the bundled binary is stripped; 0: bundle it with its debug info
#   JOBS        cargo -j (default: cargo's own)
#
# The onboard binary is built with --no-default-features (no GDAL) into target/cross, so it never holds the
# lock of the main target dir. Exit status: 0 when the build, the bundle and the check all succeed.
set -euo pipefail

TARGET=aarch64-unknown-linux-gnu
SYSROOT=/usr/aarch64-linux-gnu
SELF=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
ROOT=$(dirname "$(dirname "$SELF")")
cd "$ROOT"

do_build=1
do_check=1
for arg in "$@"; do
    case "$arg" in
        --no-check) do_check=0 ;;
        --check-only) do_build=0 ;;
        -h | --help)
            sed -n '2,23p' "$SELF" | sed 's/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "build-aarch64.sh: unknown argument '$arg' (see --help)" >&2
            exit 2
            ;;
    esac
done

log() { printf '== %s\n' "$*"; }
die() {
    printf 'build-aarch64.sh: %s\n' "$*" >&2
    exit 1
}

if [[ -z "${MODEL:-}" ]]; then
    if [[ -f models/vimgeo-demo.onnx ]]; then
        MODEL=models/vimgeo-demo.onnx
    else
        MODEL=tests/fixtures/vimgeo-test-custom.onnx
    fi
fi
MANIFEST="${MODEL%.onnx}.json"
IMAGE=${IMAGE:-tests/fixtures/forest-edge.png}
# Both builds run the same tract graph in f32; they differ only in the order the SIMD kernels (AVX2/FMA on
# x86-64, NEON on aarch64) accumulate sums. That moves a unit-norm embedding by ~1e-7 per component (9e-8
# measured with the test model); 1e-4 leaves room for larger models' longer sums and still keeps the cosine
# to the reference above 1 - 1e-5, far below the cosine gaps that separate neighbouring tiles in a cache.
# A real porting bug (layout, wrong kernel) moves it by >1e-2.
TOLERANCE=${TOLERANCE:-1e-4}
STRIP=${STRIP:-1}
QEMU_CPU=${QEMU_CPU:-cortex-a76}
[[ -f "$MODEL" ]] || die "model $MODEL not found (set MODEL=path/to/model.onnx)"
[[ -f "$MANIFEST" ]] || die "model manifest $MANIFEST not found next to $MODEL"
[[ -f "$IMAGE" ]] || die "image $IMAGE not found (set IMAGE=...)"

VERSION=$(sed -n '/^\[package\]/,/^\[/s/^version *= *"\([^"]*\)".*/\1/p' Cargo.toml | head -n1)
[[ -n "$VERSION" ]] || die "cannot read the package version from Cargo.toml"
export CARGO_TARGET_DIR="$ROOT/target/cross"
CROSS_BIN="$CARGO_TARGET_DIR/$TARGET/release/vimgeo"
DIST="$ROOT/dist/vimgeo-$VERSION-aarch64"

qemu_cmd() {
    if command -v qemu-aarch64 >/dev/null 2>&1; then
        echo qemu-aarch64
    elif command -v qemu-aarch64-static >/dev/null 2>&1; then
        echo qemu-aarch64-static
    fi
}

# --- 1. what the cross build needs --------------------------------------------------------------------------
install_missing() {
    local missing=() p
    for p in gcc-aarch64-linux-gnu libc6-dev-arm64-cross linux-libc-dev-arm64-cross libclang-dev; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    # qemu-user and qemu-user-static conflict on some releases: either one provides the emulator.
    if [[ $do_check == 1 && -z "$(qemu_cmd)" ]]; then missing+=(qemu-user); fi
    if ((${#missing[@]})); then
        log "installing Debian packages: ${missing[*]}"
        local sudo=()
        if [[ $(id -u) != 0 ]]; then sudo=(sudo); fi
        "${sudo[@]}" apt-get update -qq
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}"
    fi
    if ! rustup target list --installed | grep -qx "$TARGET"; then
        log "rustup target add $TARGET"
        rustup target add "$TARGET"
    fi
}

build() {
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
    export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
    export AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
    # bindgen (v4l's kernel headers) parses with the host libclang: point it at the arm64 headers.
    export BINDGEN_EXTRA_CLANG_ARGS_aarch64_unknown_linux_gnu="--sysroot=$SYSROOT -I$SYSROOT/include"
    local jobs=()
    if [[ -n "${JOBS:-}" ]]; then jobs=(-j "$JOBS"); fi
    log "cargo build --release --target $TARGET --no-default-features (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
    local start=$SECONDS
    cargo build --release --locked --target "$TARGET" --no-default-features "${jobs[@]}"
    log "build took $((SECONDS - start)) s; binary $(stat -c %s "$CROSS_BIN") bytes"
    # ELF e_machine (bytes 18-19, little endian) 0xb7 = EM_AARCH64.
    [[ $(od -An -tx1 -j18 -N2 "$CROSS_BIN" | tr -d ' ') == b700 ]] || die "$CROSS_BIN is not an aarch64 executable"
}

# --- 2. the bundle ----------------------------------------------------------------------------------------
bundle() {
    log "bundling $DIST"
    rm -rf "$DIST.partial"
    mkdir -p "$DIST.partial"/{bin,deploy,calib,models}
    if [[ $STRIP == 1 ]]; then
        aarch64-linux-gnu-strip -o "$DIST.partial/bin/vimgeo" "$CROSS_BIN"
    else
        cp "$CROSS_BIN" "$DIST.partial/bin/vimgeo"
    fi
    cp deploy/install.sh deploy/README.md "$DIST.partial/deploy/"
    cp -r deploy/systemd deploy/udev deploy/sysusers.d deploy/tmpfiles.d "$DIST.partial/deploy/"
    cp deploy/ardupilot.param deploy/px4.params "$DIST.partial/deploy/"
    if [[ -f deploy/vimgeo.toml ]]; then
        cp deploy/vimgeo.toml "$DIST.partial/deploy/"
    else
        echo "warning: deploy/vimgeo.toml (the onboard config example) is missing; bundle has none" >&2
    fi
    cp calib/* "$DIST.partial/calib/" 2>/dev/null || true
    cp "$MODEL" "$MANIFEST" "$DIST.partial/models/"
    (cd "$DIST.partial" && find . -type f ! -name SHA256SUMS -print0 | sort -z | xargs -0 sha256sum) \
        >"$DIST.partial/SHA256SUMS"
    rm -rf "$DIST"
    mv "$DIST.partial" "$DIST"
    tar -C "$(dirname "$DIST")" -czf "$DIST.tar.gz.partial" "$(basename "$DIST")"
    mv "$DIST.tar.gz.partial" "$DIST.tar.gz"
    log "bundle: $DIST.tar.gz ($(stat -c %s "$DIST.tar.gz") bytes)"
}

# --- 3. the qemu check ------------------------------------------------------------------------------------
check() {
    local qemu
    qemu=$(qemu_cmd)
    [[ -n "$qemu" ]] || die "neither qemu-aarch64 nor qemu-aarch64-static is installed (apt-get install qemu-user)"
    [[ -x "$CROSS_BIN" ]] || die "no aarch64 build at $CROSS_BIN (run without --check-only)"
    if [[ -z "${HOST_BIN:-}" ]]; then
        log "building the x86-64 reference: cargo build --release --no-default-features"
        (unset CARGO_TARGET_DIR && cargo build --release --locked --no-default-features)
        HOST_BIN=target/release/vimgeo
    fi
    [[ -x "$HOST_BIN" ]] || die "HOST_BIN $HOST_BIN is not an executable"
    local tmp
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' RETURN
    log "x86-64: $HOST_BIN encode --engine tract --model $MODEL $IMAGE"
    "$HOST_BIN" encode --engine tract --model "$MODEL" "$IMAGE" >"$tmp/x86_64.json"
    log "aarch64: $qemu -cpu $QEMU_CPU -L $SYSROOT $CROSS_BIN encode --engine tract --model $MODEL $IMAGE"
    local start
    start=$(date +%s%N)
    "$qemu" -cpu "$QEMU_CPU" -L "$SYSROOT" "$CROSS_BIN" encode --engine tract --model "$MODEL" "$IMAGE" >"$tmp/aarch64.json"
    log "qemu encode (model load + 1 frame) took $((($(date +%s%N) - start) / 1000000)) ms"
    log "qemu per-frame time (bench encoder, tract, 5 frames):"
    "$qemu" -cpu "$QEMU_CPU" -L "$SYSROOT" "$CROSS_BIN" bench encoder --engine tract --model "$MODEL" --image "$IMAGE" \
        --iters 5 --warmup 1 || echo "warning: bench encoder under qemu failed (the check itself does not need it)" >&2
    python3 - "$tmp/x86_64.json" "$tmp/aarch64.json" "$TOLERANCE" <<'EOF'
import json, sys
a = json.loads(open(sys.argv[1]).readline())["embedding"]
b = json.loads(open(sys.argv[2]).readline())["embedding"]
tol = float(sys.argv[3])
if len(a) != len(b):
    sys.exit(f"embedding lengths differ: x86-64 {len(a)}, aarch64 {len(b)}")
diff = max(abs(x - y) for x, y in zip(a, b))
cos = sum(x * y for x, y in zip(a, b))
print(f"== embedding dim {len(a)}: max |aarch64 - x86-64| = {diff:.3e} (tolerance {tol:.0e}), cosine {cos:.9f}")
if not diff < tol:
    sys.exit(f"FAIL: aarch64 and x86-64 embeddings differ by {diff:.3e} >= {tol:.0e}")
print("== qemu check passed")
EOF
}

if [[ $do_build == 1 ]]; then
    install_missing
    build
    bundle
fi
if [[ $do_check == 1 ]]; then
    check
fi
