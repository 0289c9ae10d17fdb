# shellcheck shell=bash
# Sourced helper: SoftHSM2 2.6.1 built with its transactional SQLite object store.
#
#   softhsm_db_build     # prints the install prefix (builds once, then cached)
#
# Debian's softhsm2 package is built without the "db" object store, so with
# `objectstore.backend = db` its C_Initialize fails ("Could not set the storage
# backend"). With the "file" store every C_Login truncates and rewrites the
# token's token.object, and a SIGKILL at that moment leaves an empty token
# (docs/runbooks.md, "A damaged or lost token"). The db store keeps a token
# in one SQLite database and changes it in transactions, which survive SIGKILL.
#
# The source is Debian's orig tarball of the same upstream release
# (softhsm2_2.6.1.orig.tar.gz), fetched from the Debian mirror this machine's
# apt already uses and checked against the SHA-256 pinned below (the hash in
# Debian's signed bookworm Sources index). It is never committed to the repo.
# Debian's own patches (debian.tar.xz) are not applied: the mirror does not
# serve that file, and none of them is needed to build the db store.
#
# Cached outside the checkout in
#   ${KMS_SOFTHSM_DB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kms/softhsm2-2.6.1-db}
# with lib/softhsm/libsofthsm2.so and bin/softhsm2-util. A second call costs
# nothing (one file test). Concurrent first builds are serialised with flock.
#
# Environment:
#   KMS_SOFTHSM_DB_CACHE   install prefix (default above)
#   KMS_DEBIAN_MIRROR      Debian mirror URL (default: the one in apt's sources)

SOFTHSM_DB_VERSION=2.6.1
SOFTHSM_DB_ORIG=softhsm2_${SOFTHSM_DB_VERSION}.orig.tar.gz
SOFTHSM_DB_SHA256=ac9ac1e3f4402f88bf3e626a18f070f8031c031947ed469c6e17482495ec72b6

softhsm_db_prefix() {
    printf '%s' "${KMS_SOFTHSM_DB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kms/softhsm2-$SOFTHSM_DB_VERSION-db}"
}

# The first Debian archive URI in apt's sources (deb822 or one-line format).
softhsm_db_mirror() {
    if [ -n "${KMS_DEBIAN_MIRROR:-}" ]; then
        printf '%s' "${KMS_DEBIAN_MIRROR%/}"
        return 0
    fi
    local uri
    uri=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        awk '
            /^[[:space:]]*#/ { next }
            /^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /\/debian\/?$/) { print $i; exit } }
            /^deb(-src)?[[:space:]]/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:.*\/debian\/?$/) { print $i; exit } }')
    printf '%s' "${uri:-http://deb.debian.org/debian}" | sed 's:/*$::'
}

# Build (once) and print the prefix. Progress goes to stderr.
softhsm_db_build() {
    local prefix
    prefix=$(softhsm_db_prefix)
    if [ -f "$prefix/.complete" ] && [ -f "$prefix/lib/softhsm/libsofthsm2.so" ] &&
        [ -x "$prefix/bin/softhsm2-util" ]; then
        printf '%s' "$prefix"
        return 0
    fi

    ensure_packages "curl:curl" "make:make" "g++:g++" "pkg-config:pkg-config" \
        "/usr/include/openssl/evp.h:libssl-dev" "/usr/include/sqlite3.h:libsqlite3-dev" || return 1

    mkdir -p -- "$(dirname -- "$prefix")" || return 1
    (
        set -euo pipefail
        if command -v flock >/dev/null 2>&1; then
            exec 8>"$prefix.lock"
            flock 8
        fi
        # Another run may have finished while we waited for the lock.
        if [ -f "$prefix/.complete" ]; then
            exit 0
        fi
        work=$(mktemp -d "${TMPDIR:-/tmp}/kms-softhsm-db.XXXXXX")
        trap 'rm -rf -- "$work"' EXIT
        url=$(softhsm_db_mirror)/pool/main/s/softhsm2/$SOFTHSM_DB_ORIG
        echo "softhsm-db: fetching $url" >&2
        curl -fsSL --retry 3 -o "$work/$SOFTHSM_DB_ORIG" "$url"
        echo "$SOFTHSM_DB_SHA256  $work/$SOFTHSM_DB_ORIG" | sha256sum -c --quiet - >&2 || {
            echo "softhsm-db: error: $SOFTHSM_DB_ORIG does not have the pinned SHA-256" >&2
            exit 1
        }
        tar -xzf "$work/$SOFTHSM_DB_ORIG" -C "$work"
        src=$work/softhsm2-$SOFTHSM_DB_VERSION
        echo "softhsm-db: building SoftHSM2 $SOFTHSM_DB_VERSION with the db object store into $prefix (a few minutes, once)" >&2
        rm -rf -- "$prefix"
        cd "$src"
        ./configure --prefix="$prefix" --with-objectstore-backend-db \
            --with-crypto-backend=openssl --disable-gost --without-p11-kit \
            --disable-dependency-tracking --silent >"$work/configure.log" 2>&1 || {
            tail -n 30 "$work/configure.log" >&2
            exit 1
        }
        # Only the library and softhsm2-util (no test suite, no other tools).
        make -s -j"$(nproc 2>/dev/null || echo 2)" -C src/lib >"$work/make.log" 2>&1 &&
            make -s -j"$(nproc 2>/dev/null || echo 2)" -C src/bin/util >>"$work/make.log" 2>&1 &&
            make -s -C src/lib install >>"$work/make.log" 2>&1 &&
            make -s -C src/bin/util install >>"$work/make.log" 2>&1 || {
            tail -n 40 "$work/make.log" >&2
            exit 1
        }
        rm -f -- "$prefix/lib/softhsm/libsofthsm2.a" "$prefix/lib/softhsm/libsofthsm2.la"
        touch "$prefix/.complete"
        echo "softhsm-db: built $prefix/lib/softhsm/libsofthsm2.so" >&2
    ) || {
        echo "softhsm-db: error: could not build SoftHSM2 with the db object store" >&2
        return 1
    }
    printf '%s' "$prefix"
}
