#!/usr/bin/env bash
# Build the Lambda layer's ffmpeg: a small, static, audio-only ffmpeg made from Debian's
# source package, for x86_64 (native) and arm64 (cross-compiled).
#
#   scripts/build_ffmpeg.sh [x86_64|arm64|all] [--layer | --path]
#
#   x86_64 | arm64 | all   the architectures to build (default x86_64)
#   --layer   then copy the first architecture's build to layers/ffmpeg/bin/ffmpeg (the
#             FfmpegLayer, /opt/bin/ffmpeg to the function): with "all" x86_64, the template's
#             default (scripts/stage_layers.py --architecture arm64 swaps in the arm64 build)
#   --path    only print where each build lives (built or not) and exit
#
# Builds are cached in .cache/ffmpeg/<debian version>-<sha256 of this file>/<arch>/ffmpeg
# (with ffmpeg.buildinfo beside it). Every flag and component is spelled out in this file, so
# any edit gives a new key; an existing build is never redone, so a re-run is instant.
#
# What it does, once per missing build:
#  * installs the build tools with apt (as root, or via sudo): gcc, make, dpkg-dev, nasm;
#    for arm64 gcc-aarch64-linux-gnu, libc6-dev-arm64-cross and qemu-user (the cross-built
#    binary is run before it is cached); adds a deb-src entry for bookworm if there is none;
#  * fetches the pinned source package with `apt-get source` into .cache/ffmpeg/src/, checks
#    the SHA256 of both tarballs against the values recorded below (taken from the .dsc) and
#    unpacks it with Debian's patches applied (dpkg-source -x);
#  * configures with --disable-everything plus the components below, builds a stripped static
#    binary (glibc, -static) and checks it: it runs, and its only protocols are file and pipe.
#
# Choices:
#  * Components: what lambda_app/asr/ffmpeg.py needs. Input only through the file protocol
#    (pipe: for the output), no network code at all; the demuxers of its whitelist; the audio
#    decoders those containers carry (with the speech codecs: AMR, GSM, G.72x, QCELP, EVRC,
#    iLBC, Speex, Nellymoser); the wav muxer and pcm_f32le encoder it writes; aresample and
#    aformat (the conversion ffmpeg inserts between any decoder's sample format and
#    pcm_f32le), anull and atrim (its default audio graph and -t). No external libraries.
#  * Assembly stays on: nasm on x86_64 decoded a 10-minute file 1.2-1.5x faster (AAC 0.29 vs
#    0.45 s, MP3 0.45 vs 0.52 s, Opus 1.10 vs 1.53 s of CPU) for +77 kB and ~6 s more
#    compile time; arm64's NEON code needs nothing beyond the cross compiler.
#  * --enable-small (-Os), no debug info, stripped: ~3.3 MB (x86_64), ~2.8 MB (arm64).
#  * Reproducible: pinned source and flags, Debian 12's compilers, an in-tree build (relative
#    source paths), LC_ALL=C, TZ=UTC, umask 022, SOURCE_DATE_EPOCH from debian/changelog.
#    Two builds on one machine give identical bytes.
#
# The build host must be x86_64 Debian 12 (bookworm): the source and compilers come from its
# archive. When Debian replaces the pinned version in its archive, `apt-get source` stops
# finding it: bump DEBIAN_VERSION and both SHA256s from the new .dsc.
set -euo pipefail
script=$(realpath "$0")
cd "$(dirname "$script")/.."
repo=$PWD

DEBIAN_VERSION=5.1.9-0+deb12u1 # apt's version is "7:5.1.9-0+deb12u1" (epoch 7)
DEBIAN_EPOCH=7
UPSTREAM_VERSION=${DEBIAN_VERSION%%-*}
ORIG_TARBALL=ffmpeg_${UPSTREAM_VERSION}.orig.tar.xz
ORIG_SHA256=d9b593bb2ba93d4b50f74177e0cdcd41747e708596367deed0c30348a71dd176
DEBIAN_TARBALL=ffmpeg_${DEBIAN_VERSION}.debian.tar.xz
DEBIAN_SHA256=71b20472ecd2764bc98e3229d34c0f7c8dcfe4a6cbacc23fd5604c23bac04632

DEMUXERS=(
  aac ac3 aiff amr amrnb amrwb ape asf au avi caf dts eac3 flac flv loas matroska mov mp3
  mpegps mpegts ogg tta w64 wav wv # mpegps is the whitelist's "mpeg"
)
DECODERS=(
  aac aac_latm mp1float mp2float mp3float ac3 eac3 dca
  opus vorbis flac alac ape tta wavpack
  wmav1 wmav2 wmapro wmalossless wmavoice
  amrnb amrwb gsm gsm_ms qcelp evrc ilbc g723_1 g729 speex nellymoser
  adpcm_g722 adpcm_g726 adpcm_g726le adpcm_ms adpcm_ima_wav adpcm_ima_qt adpcm_swf adpcm_yamaha
  pcm_alaw pcm_mulaw pcm_s8 pcm_u8 pcm_s16le pcm_s16be pcm_u16le pcm_u16be
  pcm_s24le pcm_s24be pcm_u24le pcm_u24be pcm_s32le pcm_s32be pcm_u32le pcm_u32be
  pcm_s64le pcm_s64be pcm_f16le pcm_f24le pcm_f32le pcm_f32be pcm_f64le pcm_f64be
  pcm_s16le_planar pcm_s24le_planar pcm_s32le_planar pcm_dvd pcm_bluray
)
PARSERS=(aac aac_latm ac3 amr dca flac g723_1 g729 gsm mpegaudio opus vorbis)
FILTERS=(aformat anull aresample atrim)

join() { local IFS=,; echo "$*"; }
# shellcheck disable=SC2054 # the commas are inside values (--enable-protocol=file,pipe)
CONFIGURE_FLAGS=(
  --disable-everything --disable-autodetect --disable-network --disable-iconv
  --disable-doc --disable-debug --disable-ffplay --disable-ffprobe
  --disable-avdevice --disable-swscale --disable-postproc
  --enable-small --enable-static --disable-shared --extra-ldexeflags=-static
  --extra-version="${DEBIAN_VERSION#*-}-audio"
  --enable-protocol=file,pipe
  --enable-demuxer="$(join "${DEMUXERS[@]}")"
  --enable-decoder="$(join "${DECODERS[@]}")"
  --enable-parser="$(join "${PARSERS[@]}")"
  --enable-filter="$(join "${FILTERS[@]}")"
  --enable-muxer=wav --enable-encoder=pcm_f32le
)
ARM64_FLAGS=(--enable-cross-compile --arch=aarch64 --target-os=linux --cross-prefix=aarch64-linux-gnu-)

usage() {
  sed -n '5,11p' "$script" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
die() {
  echo "build_ffmpeg.sh: $*" >&2
  exit 1
}

arches=() action=build
for arg in "$@"; do
  case "$arg" in
    x86_64 | arm64) arches+=("$arg") ;;
    all) arches+=(x86_64 arm64) ;;
    --layer) action=layer ;;
    --path) action=path ;;
    -h | --help) usage ;;
    *) echo "unknown argument: $arg" >&2 && usage ;;
  esac
done
[ ${#arches[@]} -gt 0 ] || arches=(x86_64)

key="$DEBIAN_VERSION-$(sha256sum "$script" | cut -c1-16)"
cache="$repo/.cache/ffmpeg"
built() { echo "$cache/$key/$1/ffmpeg"; }

if [ "$action" = path ]; then
  for arch in "${arches[@]}"; do built "$arch"; done
  exit 0
fi

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_updated=no
apt_update() {
  if [ "$apt_updated" = no ]; then
    as_root apt-get update -qq
    apt_updated=yes
  fi
}

install_packages() {
  local missing=() package
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" ||
      missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return
  echo "• installing ${missing[*]}"
  apt_update
  as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

check_host() {
  [ "$(uname -m)" = x86_64 ] || die "the build host must be x86_64 (this is $(uname -m))"
  local codename
  # shellcheck disable=SC1091
  codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
  [ "$codename" = bookworm ] ||
    die "the build host must be Debian 12 (bookworm): the pinned source and compilers come from its archive (this is '${codename:-unknown}')"
}

ensure_deb_src() {
  if grep -rqsE '^[[:space:]]*(deb-src[[:space:]]|Types:.*deb-src)' \
    /etc/apt/sources.list /etc/apt/sources.list.d/; then
    return
  fi
  echo "• adding Debian's source archive (deb-src) to /etc/apt/sources.list.d/debian-src.sources"
  as_root tee /etc/apt/sources.list.d/debian-src.sources >/dev/null <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  apt_updated=no
}

verify() { # file expected-sha256
  local actual
  actual=$(sha256sum "$1" | cut -d' ' -f1)
  [ "$actual" = "$2" ] && return 0
  rm -f "$1"
  die "SHA256 mismatch for $(basename "$1"): expected $2 (pinned from the .dsc), got $actual; the download was deleted"
}

fetch_source() {
  local src="$cache/src"
  if [ -f "$src/$ORIG_TARBALL" ] && [ -f "$src/$DEBIAN_TARBALL" ] &&
    [ -f "$src/ffmpeg_$DEBIAN_VERSION.dsc" ]; then
    verify "$src/$ORIG_TARBALL" "$ORIG_SHA256"
    verify "$src/$DEBIAN_TARBALL" "$DEBIAN_SHA256"
    return
  fi
  ensure_deb_src
  mkdir -p "$src"
  echo "• fetching Debian's ffmpeg $DEBIAN_VERSION source package"
  local log="$cache/apt-get-source.log" want="ffmpeg=$DEBIAN_EPOCH:$DEBIAN_VERSION"
  if ! (cd "$src" && apt-get source --download-only "$want") >"$log" 2>&1; then
    apt_update # the package lists may predate the deb-src entry, or be missing
    if ! (cd "$src" && apt-get source --download-only "$want") >"$log" 2>&1; then
      cat "$log" >&2
      die "apt-get source $want failed. If Debian has replaced that version (available: $(apt-cache showsrc ffmpeg 2>/dev/null | sed -n 's/^Version: //p' | sort -u | tr '\n' ' ')), bump DEBIAN_VERSION and both SHA256s in $script from the new .dsc"
    fi
  fi
  verify "$src/$ORIG_TARBALL" "$ORIG_SHA256"
  verify "$src/$DEBIAN_TARBALL" "$DEBIAN_SHA256"
}

smoke_test() { # binary arch
  local run=("$1")
  [ "$2" = arm64 ] && run=(qemu-aarch64 "$1")
  "${run[@]}" -hide_banner -version >/dev/null || die "the $2 build does not run"
  local protocols
  protocols=$("${run[@]}" -hide_banner -protocols | sed -n 's/^  //p' | sort -u | tr '\n' ' ')
  [ "$protocols" = "file pipe " ] || die "the $2 build has protocols other than file and pipe: $protocols"
}

build() { # arch; runs in a subshell of its own (the two architectures build in parallel)
  local arch=$1 out work log="$cache/build-$1.log" started=$SECONDS
  out=$(built "$arch")
  work=$(mktemp -d "$cache/build-$arch.XXXXXX")
  # shellcheck disable=SC2064 # expanded now: $work is local to this function
  trap "rm -rf '$work'" EXIT
  local flags=("${CONFIGURE_FLAGS[@]}")
  [ "$arch" = arm64 ] && flags+=("${ARM64_FLAGS[@]}")
  # (set -e does not apply inside a `( ... ) || ...` list, hence the && chain.)
  (
    # dpkg-source checks the .dsc's checksums; it cannot check the signature without
    # debian-keyring, but apt checked the files against the signed archive, and we the pins.
    dpkg-source -x "$cache/src/ffmpeg_$DEBIAN_VERSION.dsc" "$work/ffmpeg" &&
      cd "$work/ffmpeg" &&
      SOURCE_DATE_EPOCH=$(dpkg-parsechangelog -l debian/changelog -STimestamp) &&
      export SOURCE_DATE_EPOCH LC_ALL=C TZ=UTC &&
      umask 022 &&
      ./configure "${flags[@]}" &&
      make -j"$(nproc)"
  ) >"$log" 2>&1 || {
    tail -40 "$log" >&2
    die "the $arch build failed: the end of $log is above"
  }
  local binary="$work/ffmpeg/ffmpeg"
  smoke_test "$binary" "$arch"
  mkdir -p "$(dirname "$out")"
  {
    echo "debian_source: ffmpeg $DEBIAN_EPOCH:$DEBIAN_VERSION ($ORIG_TARBALL sha256 $ORIG_SHA256)"
    echo "architecture: $arch"
    echo "compiler: $(sed -n 's/^#define CC_IDENT "\(.*\)"/\1/p' "$work/ffmpeg/config.h")"
    echo "configure: ${flags[*]}"
    echo "sha256: $(sha256sum "$binary" | cut -d' ' -f1)"
    echo "bytes: $(stat -c %s "$binary")"
    echo "build_seconds: $((SECONDS - started))"
  } >"$out.buildinfo"
  cp "$binary" "$out.partial"
  chmod 755 "$out.partial"
  mv "$out.partial" "$out"
  echo "• built $out ($(stat -c %s "$out") bytes, $((SECONDS - started)) s)"
}

missing=()
for arch in "${arches[@]}"; do
  if [ -x "$(built "$arch")" ]; then
    echo "• cached $(built "$arch")"
  else
    missing+=("$arch")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  check_host
  packages=(gcc libc6-dev make dpkg-dev xz-utils)
  for arch in "${missing[@]}"; do
    case "$arch" in
      x86_64) packages+=(nasm) ;;
      arm64) packages+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user) ;;
    esac
  done
  install_packages "${packages[@]}"
  fetch_source
  # Both at once: their configure runs and serial link steps overlap each other's compiles.
  echo "• building ffmpeg $DEBIAN_VERSION for ${missing[*]} (make -j$(nproc) each; 1-2 min)"
  pids=()
  for arch in "${missing[@]}"; do
    (build "$arch") &
    pids+=($!)
  done
  failed=0
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  [ "$failed" = 0 ] || exit 1
fi

if [ "$action" = layer ]; then
  layer="$repo/layers/ffmpeg/bin/ffmpeg"
  source=$(built "${arches[0]}")
  mkdir -p "$(dirname "$layer")"
  if cmp -s "$source" "$layer"; then
    echo "• unchanged $layer (${arches[0]})"
  else
    cp "$source" "$layer.partial"
    chmod 755 "$layer.partial"
    mv "$layer.partial" "$layer"
    echo "• copied ${arches[0]} build to $layer"
  fi
fi
