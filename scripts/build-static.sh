#!/usr/bin/env bash
# Build a fully static wiremap for old hosts (CentOS 7 class: Linux 3.10, glibc 2.17 or none):
#
#   bash scripts/build-static.sh            -> prints the path of the static binary
#
# 1. A minimal libpcap.a from Debian's own source package (the system's libpcap.a pulls in
#    dbus, systemd, bluetooth and usb): `apt-get source --download-only libpcap` through a
#    PRIVATE apt configuration (deb-src entries for the same Debian mirror as the system's
#    sources, private lists and archives folders: the system's apt state is not touched), then
#    configure without dbus/bluetooth/usb/rdma/libnl and `make libpcap.a`. Cached in
#    $CARGO_TARGET_DIR/static-deps (or target/static-deps): later runs skip this step.
# 2. cargo --config .cargo/static.toml build --release --target x86_64-unknown-linux-gnu
#    (+crt-static: glibc linked in), with the pcap crate pointed at that libpcap.a through
#    LIBPCAP_LIBDIR (a folder holding only libpcap.a, so the link cannot pick a shared one).
#    With a profile of its own runs (PGO: scripts/pgo-profile.sh) where that can run (root,
#    tcpreplay, an llvm-profdata for this rustc); WIREMAP_PGO=0 skips it.
# 3. Checks that `file` and `ldd` agree the result has no dynamic dependencies.
#
# Needs: cargo, gcc, make, flex, bison, dpkg-dev (dpkg-source), file; network access to the
# Debian mirror (once). Root is not required if apt's private folders are writable.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET=x86_64-unknown-linux-gnu
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
CACHE=${WIREMAP_STATIC_CACHE:-$TARGET_DIR/static-deps}

log() { printf '[build-static] %s\n' "$*" >&2; }
die() { printf '[build-static] ERROR: %s\n' "$*" >&2; exit 1; }

for tool in cargo gcc make flex bison apt-get dpkg-source file ldd; do
    command -v "$tool" >/dev/null || die "missing tool: $tool (apt-get install gcc make flex bison dpkg-dev file)"
done
[[ $(uname -m) == x86_64 ]] || die "this script builds for $TARGET on an x86_64 host"

# ------------------------------------------------------------------ deb-src for the same mirror
# Every enabled `deb` entry of the system whose suite belongs to this release (bookworm,
# bookworm-updates, bookworm-security, ...) becomes a `deb-src` entry: the Debian mirror(s)
# the system already uses, and no third-party repository.
codename() {
    local c=""
    [[ -r /etc/os-release ]] && c=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    [[ -n $c ]] || die "cannot tell this system's release (VERSION_CODENAME in /etc/os-release)"
    echo "$c"
}

deb_src_entries() {   # deb_src_entries CODENAME -> a deb822 .sources text on stdout
    local rel=$1 f
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -r $f ]] || continue
        # One paragraph per entry; keep single-line fields (Signed-By as a path).
        awk -v rel="$rel" '
            function flush() {
                if (types ~ /(^|[ \t])deb([ \t]|$)/ && enabled != "no" && uris != "") {
                    n = split(suites, s, /[ \t]+/); keep = ""
                    for (i = 1; i <= n; i++) if (s[i] == rel || index(s[i], rel "-") == 1) keep = keep (keep ? " " : "") s[i]
                    if (keep != "") {
                        printf "Types: deb-src\nURIs: %s\nSuites: %s\nComponents: %s\n", uris, keep, comps
                        if (signed != "") printf "Signed-By: %s\n", signed
                        printf "\n"
                    }
                }
                types = uris = suites = comps = signed = enabled = ""
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            /^[^ \t]/ {
                key = tolower($1); sub(/:$/, "", key); val = $0; sub(/^[^:]*:[ \t]*/, "", val)
                if (key == "types") types = val
                else if (key == "uris") uris = val
                else if (key == "suites") suites = val
                else if (key == "components") comps = val
                else if (key == "signed-by") signed = val
                else if (key == "enabled") enabled = tolower(val)
            }
            END { flush() }' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r $f ]] || continue
        # deb [options] URI SUITE COMPONENT...  ->  the same entry in deb822 form
        awk -v rel="$rel" '
            $1 != "deb" { next }
            {
                opts = ""; i = 2
                if ($2 ~ /^\[/) { while (i <= NF) { opts = opts " " $i; if ($i ~ /\]$/) { i++; break } i++ } }
                uri = $i; suite = $(i + 1); comps = ""
                for (j = i + 2; j <= NF; j++) comps = comps (comps ? " " : "") $j
                if (!(suite == rel || index(suite, rel "-") == 1)) next
                printf "Types: deb-src\nURIs: %s\nSuites: %s\nComponents: %s\n", uri, suite, comps
                if (match(opts, /signed-by=[^] ]+/)) printf "Signed-By: %s\n", substr(opts, RSTART + 10, RLENGTH - 10)
                printf "\n"
            }' "$f"
    done
}

# ------------------------------------------------------------------ minimal libpcap.a
LIBDIR=$CACHE/libpcap-lib          # holds libpcap.a only (LIBPCAP_LIBDIR)
STAMP=$LIBDIR/VERSION
build_libpcap() {
    local rel apt_dir src_dir dsc srcdir ver
    rel=$(codename)
    apt_dir=$CACHE/apt
    src_dir=$CACHE/src
    rm -rf "$apt_dir" "$src_dir" "$LIBDIR"
    mkdir -p "$apt_dir/sources.list.d" "$apt_dir/lists/partial" "$apt_dir/archives/partial" "$src_dir" "$LIBDIR"
    deb_src_entries "$rel" > "$apt_dir/sources.list.d/wiremap-deb-src.sources"
    [[ -s "$apt_dir/sources.list.d/wiremap-deb-src.sources" ]] \
        || die "no enabled 'deb' entry for $rel in /etc/apt/sources.list*: cannot name a deb-src mirror"
    log "deb-src entries (private, in $apt_dir):"
    sed 's/^/    /' "$apt_dir/sources.list.d/wiremap-deb-src.sources" >&2

    # Private apt: the system's sources, lists and caches are neither read nor written.
    local apt=(apt-get -q
        -o Dir::Etc::sourcelist=/dev/null
        -o Dir::Etc::sourceparts="$apt_dir/sources.list.d"
        -o Dir::State::Lists="$apt_dir/lists"
        -o Dir::Cache::archives="$apt_dir/archives"
        -o Dir::Cache::pkgcache= -o Dir::Cache::srcpkgcache=
        -o Acquire::Retries=3)
    # apt's download sandbox user (_apt) cannot write into a folder made by root here.
    [[ $EUID -eq 0 ]] && apt+=(-o APT::Sandbox::User=root)
    log "apt-get update (private lists)"
    "${apt[@]}" update >&2 || die "apt-get update for the deb-src entries failed"
    log "apt-get source --download-only libpcap"
    (cd "$src_dir" && "${apt[@]}" source --download-only libpcap >&2) \
        || die "apt-get source --download-only libpcap failed"
    dsc=$(ls "$src_dir"/libpcap_*.dsc 2>/dev/null | head -n 1)
    [[ -n $dsc ]] || die "no libpcap .dsc was downloaded"
    # apt checked the files against the signed Release/Sources indexes already.
    (cd "$src_dir" && dpkg-source --no-check -x "$dsc" libpcap >&2)
    srcdir=$src_dir/libpcap
    # The upstream version (libpcap_1.10.3-1.dsc -> 1.10.3): the pcap crate's cfgs follow it.
    ver=$(basename "$dsc" .dsc | sed -n 's/^libpcap_\([0-9][0-9.]*\).*/\1/p')
    [[ $ver =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "cannot read libpcap's version from $dsc"
    log "configure + make libpcap.a (libpcap $ver, only libc beneath it)"
    (cd "$srcdir" \
        && ./configure --disable-shared --disable-dbus --disable-bluetooth --disable-usb \
                       --disable-rdma --without-libnl > "$CACHE/libpcap-configure.log" 2>&1 \
        && make -j"$(nproc)" libpcap.a > "$CACHE/libpcap-make.log" 2>&1) \
        || { tail -n 30 "$CACHE/libpcap-configure.log" "$CACHE/libpcap-make.log" >&2 2>/dev/null; die "building libpcap.a failed"; }
    cp "$srcdir/libpcap.a" "$LIBDIR/libpcap.a"
    echo "$ver" > "$STAMP"
    rm -rf "$src_dir"
}

if [[ -s $LIBDIR/libpcap.a && $(cat "$STAMP" 2>/dev/null) =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
    log "libpcap.a $(cat "$STAMP") cached in $LIBDIR"
else
    build_libpcap
fi
# LIBPCAP_LIBDIR must hold libpcap.a alone: a libpcap.so beside it would be linked instead.
for f in "$LIBDIR"/*; do
    case ${f##*/} in libpcap.a|VERSION) ;; *) die "unexpected file in $LIBDIR: $f" ;; esac
done

# ------------------------------------------------------------------ cargo build
cd "$REPO"
LIBPCAP_VER=$(cat "$STAMP")
export LIBPCAP_LIBDIR=$LIBDIR LIBPCAP_VER
# Optimised with a profile of this very build's runs (scripts/pgo-profile.sh), as
# scripts/build-release.sh does for the ordinary one.
PGO_FLAGS=()
if profile=$(PGO_TARGET=$TARGET PGO_CARGO_CONFIG=$REPO/.cargo/static.toml bash "$REPO/scripts/pgo-profile.sh"); then
    PGO_FLAGS=(--config "target.$TARGET.rustflags=['-Cprofile-use=$profile']")
    log "PGO: yes ($profile)"
else
    log "PGO: no (the line above says why): built without a profile"
fi
log "cargo build --release --target $TARGET (+crt-static, libpcap.a)"
cargo --config "$REPO/.cargo/static.toml" "${PGO_FLAGS[@]}" build --release --target "$TARGET" --bin wiremap >&2
BIN=$TARGET_DIR/$TARGET/release/wiremap
[[ -x $BIN ]] || die "no binary at $BIN"

# ------------------------------------------------------------------ checks
desc=$(file -b "$BIN")
log "file: $desc"
[[ $desc == *"statically linked"* || $desc == *"static-pie linked"* ]] || die "not a static binary: $desc"
if ldd_out=$(ldd "$BIN" 2>&1); then
    case $ldd_out in
        *"statically linked"*|*"not a dynamic executable"*) ;;
        *) die "ldd lists dependencies: $ldd_out" ;;
    esac
fi
log "ldd: $(ldd "$BIN" 2>&1 | head -n 1 | sed 's/^[[:space:]]*//')"
echo "$BIN"
