# shellcheck shell=bash
# Sourced helper: virtual PIV smartcards (tests/virtual-piv) behind a private pcscd + vpcd.
#
#   . scripts/lib/ensure-packages.sh      # (sourced here if ensure_packages is missing)
#   . scripts/lib/virtual-piv.sh
#   vpiv_ensure_packages                  # apt: pcscd, vsmartcard-vpcd, opensc, ykcs11, build deps
#   vpiv_build                            # cargo build of the emulator (release, --locked)
#   trap vpiv_stop EXIT
#   vpiv_start [STATE_DIR...]             # pcscd + one card per STATE_DIR (default: one new card)
#   ... tests ...                         # see "What a client needs" below
#   vpiv_card_stop 0; vpiv_card_start 0   # restart card 0 on the same state (keys, PIN counters)
#   vpiv_stop                             # stops only what vpiv_start started, by pid
#
# What a client needs (exported by vpiv_start):
#   PCSCLITE_CSOCK_NAME  the private pcscd's socket. libpcsclite (the `pcsc`/`yubikey` crates,
#                        OpenSC, ykcs11, opensc-tool) reads it; without it a client talks to
#                        the system pcscd (/run/pcscd/pcscd.comm) and sees no virtual card.
#   VPIV_SERIALS         the cards' serials, in STATE_DIR order (space separated): open a card
#                        with YubiKey::open_by_serial; YubiKey::open() fails with two cards.
#   VPIV_STATE_DIRS, VPIV_PORTS, VPIV_PIDS   per card, same order
#   VPIV_READERS         the PC/SC reader name of each card (same order, '|' separated)
#   VPIV_SPARE_PORTS     vpcd ports with an empty reader (VPIV_SPARE_SLOTS, and the odd slot
#                        left when the card count is odd): a test may run its own card there,
#                        "$VPIV_BIN" STATE_DIR --port PORT, and kill it by its pid
#   VPIV_BIN             the emulator binary; VPIV_DIR its run directory (logs: $VPIV_DIR/*.log)
#   VPIV_OPENSC_MODULE, VPIV_YKCS11_MODULE   PKCS#11 modules that see the cards
# Card defaults: PIN 123456, PUK 12345678, 3 PIN tries, management key (3DES)
#   010203040506070801020304050607080102030405060708; YubiKey version 5.4.3.
#
# Settings (environment, all optional):
#   VPIV_READER_NAME  reader name (default "Yubico YubiKey Virtual PIV": ykcs11 only uses readers
#                     whose name contains "Yubico")
#   VPIV_VERSION      firmware version the cards report (default 5.4.3; the yubikey crate 0.8
#                     needs 4.x or 5.x)
#   VPIV_SERIAL_BASE  serial of card i on its first start is BASE+i (default: random)
#   VPIV_SPARE_SLOTS  extra empty reader slots to create (default 0)
#   VPIV_KEEP         when set, vpiv_stop keeps $VPIV_DIR (logs, default card state)
#   VPIV_TARGET_DIR   cargo target dir (default REPO/target/virtual-piv)
# STATE_DIRs must not contain spaces. Each card keeps its serial, keys, certificates and PIN/PUK
# counters in its STATE_DIR (serial, internal.bin, external.bin); a new directory is a new card.
#
# pcscd 1.9.9 always creates its socket at /run/pcscd/pcscd.comm (PCSCLITE_CSOCK_NAME is read by
# clients only), so vpiv_start runs it in a private mount namespace (unshare -m) with a private
# directory bind-mounted on /run/pcscd; the socket then shows at $VPIV_DIR/run/pcscd.comm. Where
# unshare is not permitted it falls back to the system path, and only if no pcscd is running.
# vpcd listens on TCP ports (two card slots per reader entry: PORT and PORT+1, on all
# interfaces); vpiv_start picks free ports and each card connects to 127.0.0.1:PORT.
# Reader k/2's name is "$VPIV_READER_NAME K 00 0S" (K = card/2, S = card%2).

_vpiv_lib_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
_vpiv_repo=$(cd "$_vpiv_lib_dir/../.." && pwd)
if ! declare -F ensure_packages >/dev/null; then
    # shellcheck source=scripts/lib/ensure-packages.sh
    . "$_vpiv_lib_dir/ensure-packages.sh"
fi

VPIV_OPENSC_MODULE=${VPIV_OPENSC_MODULE:-/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so}
VPIV_YKCS11_MODULE=${VPIV_YKCS11_MODULE:-/usr/lib/x86_64-linux-gnu/libykcs11.so}
export VPIV_OPENSC_MODULE VPIV_YKCS11_MODULE

_vpiv_log() { printf 'virtual-piv: %s\n' "$*" >&2; }

# Installs what building and running the cards needs (idempotent; apt-get only when missing).
vpiv_ensure_packages() {
    ensure_packages "/usr/sbin/pcscd:pcscd" "vpcd-config:vsmartcard-vpcd" \
        "opensc-tool:opensc" "pkcs11-tool:opensc" "pkg-config:pkg-config" "cc:gcc" \
        "unshare:util-linux" || return 1
    # Libraries and modules, not commands: probed by path, installed through a command name
    # that never exists (as scripts/test does).
    [ -e /usr/lib/x86_64-linux-gnu/pkgconfig/libpcsclite.pc ] ||
        compgen -G '/usr/lib/*/pkgconfig/libpcsclite.pc' >/dev/null ||
        ensure_packages "vpiv-missing-libpcsclite-dev:libpcsclite-dev" || return 1
    compgen -G '/usr/lib/llvm-*/lib/libclang.so' >/dev/null ||
        ensure_packages "vpiv-missing-libclang-dev:libclang-dev" || return 1
    compgen -G '/usr/lib/*/opensc-pkcs11.so' >/dev/null ||
        ensure_packages "vpiv-missing-opensc-pkcs11:opensc-pkcs11" || return 1
    compgen -G '/usr/lib/*/libykcs11.so*' >/dev/null ||
        ensure_packages "vpiv-missing-ykcs11:ykcs11" || return 1
}

_vpiv_target_dir() { printf '%s\n' "${VPIV_TARGET_DIR:-$_vpiv_repo/target/virtual-piv}"; }

# Builds the emulator (and, with --smoke, the piv-smoke example). Prints nothing on success
# beyond cargo's own progress on stderr.
vpiv_build() {
    local -a what=(--bin virtual-piv)
    if [ "${1-}" = --smoke ]; then
        what+=(--example piv-smoke)
    fi
    (cd "$_vpiv_repo/tests/virtual-piv" &&
        CARGO_TARGET_DIR=$(_vpiv_target_dir) cargo build --release --locked "${what[@]}" </dev/null) ||
        return 1
    VPIV_BIN=$(_vpiv_target_dir)/release/virtual-piv
    export VPIV_BIN
}

# An even TCP port P such that nothing listens on 127.0.0.1 at P .. P+COUNT-1.
_vpiv_free_ports() {
    local count=$1 port j tries=0 ok
    while [ $tries -lt 50 ]; do
        port=$((20000 + (RANDOM % 10000) * 2))
        ok=1
        for ((j = 0; j < count; j++)); do
            _vpiv_port_free $((port + j)) || { ok=0; break; }
        done
        if [ $ok = 1 ]; then
            printf '%s\n' "$port"
            return 0
        fi
        tries=$((tries + 1))
    done
    return 1
}

_vpiv_port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Number of readers that hold a card, as the private pcscd reports them.
_vpiv_cards_present() {
    opensc-tool -l 2>/dev/null | awk '$2 == "Yes" { n++ } END { print n + 0 }'
}

# vpiv_start [STATE_DIR...]: start pcscd with vpcd readers and one card per STATE_DIR (a new
# directory under $VPIV_DIR when none is given), then wait until pcscd sees every card.
vpiv_start() {
    local -a dirs=("$@")
    local n i k base pid waited
    [ -n "${VPIV_PCSCD_PID-}" ] && { _vpiv_log "already started (pcscd pid $VPIV_PCSCD_PID)"; return 1; }
    VPIV_BIN=${VPIV_BIN:-$(_vpiv_target_dir)/release/virtual-piv}
    [ -x "$VPIV_BIN" ] || { _vpiv_log "no emulator at $VPIV_BIN: run vpiv_build"; return 1; }
    VPIV_DIR=$(mktemp -d "${TMPDIR:-/tmp}/virtual-piv.XXXXXX") || return 1
    if [ ${#dirs[@]} -eq 0 ]; then
        dirs=("$VPIV_DIR/card0")
    fi
    n=${#dirs[@]}
    mkdir -p "$VPIV_DIR/conf" "$VPIV_DIR/run"
    local spare=${VPIV_SPARE_SLOTS:-0} slots
    slots=$(((n + spare + 1) / 2 * 2))
    base=$(_vpiv_free_ports "$slots") || { _vpiv_log "no free TCP ports"; return 1; }
    VPIV_SPARE_PORTS=
    for ((i = n; i < slots; i++)); do
        VPIV_SPARE_PORTS+="${VPIV_SPARE_PORTS:+ }$((base + i))"
    done
    export VPIV_SPARE_PORTS
    local name=${VPIV_READER_NAME:-Yubico YubiKey Virtual PIV} driver
    driver=$(readlink -f /usr/lib/pcsc/drivers/serial/libifdvpcd.so) ||
        { _vpiv_log "vpcd driver missing: vpiv_ensure_packages"; return 1; }
    mkdir -p "$VPIV_DIR/lib"
    # One reader entry per two slots; entry k serves ports base+2k and base+2k+1. The vpcd
    # driver keeps its two slots in global state, so every entry loads its own copy of it
    # (pcscd reuses an already loaded driver path, and a second entry on the same copy would
    # take over the first one's slots).
    for ((k = 0; k < slots / 2; k++)); do
        local port=$((base + 2 * k))
        cp "$driver" "$VPIV_DIR/lib/libifdvpcd-$k.so" || return 1
        printf 'FRIENDLYNAME "%s %s"\nDEVICENAME /dev/null:0x%04X\nLIBPATH %s\nCHANNELID 0x%04X\n\n' \
            "$name" "$k" "$port" "$VPIV_DIR/lib/libifdvpcd-$k.so" "$port" \
            >"$VPIV_DIR/conf/vpcd-$k"
    done

    # pcscd in a private mount namespace whose /run/pcscd is $VPIV_DIR/run.
    mkdir -p /run/pcscd 2>/dev/null
    if unshare -m --propagation private true 2>/dev/null; then
        # shellcheck disable=SC2016 # $1 and $2 are the inner shell's arguments
        unshare -m --propagation private sh -c \
            'mount --bind "$1" /run/pcscd && exec pcscd -f -c "$2"' sh \
            "$VPIV_DIR/run" "$VPIV_DIR/conf" >"$VPIV_DIR/pcscd.log" 2>&1 </dev/null &
        VPIV_PCSCD_PID=$!
        PCSCLITE_CSOCK_NAME=$VPIV_DIR/run/pcscd.comm
    else
        if [ -S /run/pcscd/pcscd.comm ] && pgrep -x pcscd >/dev/null; then
            _vpiv_log "unshare is not permitted and a system pcscd is running: stop it first"
            return 1
        fi
        _vpiv_log "unshare not permitted: using the system socket /run/pcscd/pcscd.comm"
        pcscd -f -c "$VPIV_DIR/conf" >"$VPIV_DIR/pcscd.log" 2>&1 </dev/null &
        VPIV_PCSCD_PID=$!
        PCSCLITE_CSOCK_NAME=/run/pcscd/pcscd.comm
    fi
    export PCSCLITE_CSOCK_NAME VPIV_DIR VPIV_BIN VPIV_PCSCD_PID
    waited=0
    until [ -S "$PCSCLITE_CSOCK_NAME" ]; do
        if ! kill -0 "$VPIV_PCSCD_PID" 2>/dev/null || [ $waited -ge 100 ]; then
            _vpiv_log "pcscd did not start; log:"
            cat "$VPIV_DIR/pcscd.log" >&2
            vpiv_stop
            return 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done

    VPIV_STATE_DIRS=
    VPIV_PORTS=
    VPIV_PIDS=
    VPIV_SERIALS=
    VPIV_READERS=
    for ((i = 0; i < n; i++)); do
        mkdir -p "${dirs[$i]}" || { vpiv_stop; return 1; }
        VPIV_STATE_DIRS+="${VPIV_STATE_DIRS:+ }$(cd "${dirs[$i]}" && pwd)"
        VPIV_PORTS+="${VPIV_PORTS:+ }$((base + i))"
        VPIV_PIDS+="${VPIV_PIDS:+ }-"
        VPIV_READERS+="${VPIV_READERS:+|}$name $((i / 2)) 00 $(printf '%02X' $((i % 2)))"
        if [ -n "${VPIV_SERIAL_BASE-}" ] && [ ! -e "${dirs[$i]}/serial" ]; then
            printf '%s\n' $((VPIV_SERIAL_BASE + i)) >"${dirs[$i]}/serial"
        fi
    done
    export VPIV_STATE_DIRS VPIV_PORTS VPIV_PIDS VPIV_READERS
    for ((i = 0; i < n; i++)); do
        vpiv_card_start "$i" --no-wait || { vpiv_stop; return 1; }
    done
    _vpiv_wait_present "$n" || { vpiv_stop; return 1; }
    _vpiv_log "$n card(s) up: serials $VPIV_SERIALS; PCSCLITE_CSOCK_NAME=$PCSCLITE_CSOCK_NAME"
}

# Waits (up to 20 s) until pcscd reports N readers with a card.
_vpiv_wait_present() {
    local want=$1 waited=0
    until [ "$(_vpiv_cards_present)" -ge "$want" ]; do
        if [ $waited -ge 200 ]; then
            _vpiv_log "timed out waiting for $want card(s); pcscd sees $(_vpiv_cards_present)"
            opensc-tool -l >&2 || true
            tail -n 20 "$VPIV_DIR"/card*.log >&2 2>/dev/null || true
            return 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
}

_vpiv_nth() { # _vpiv_nth VAR INDEX: word INDEX of the space-separated list in VAR
    local -a a
    read -r -a a <<<"${!1-}"
    printf '%s\n' "${a[$2]-}"
}

_vpiv_set_nth() { # _vpiv_set_nth VAR INDEX VALUE (space-separated list in VAR)
    local var=$1 i=$2 value=$3
    local -a a
    read -r -a a <<<"${!var}"
    a[i]=$value
    printf -v "$var" '%s' "${a[*]}"
    export "${var?}"
}

# vpiv_card_start I [--no-wait]: (re)start card I on its state directory and port.
vpiv_card_start() {
    local i=$1 dir port pid
    dir=$(_vpiv_nth VPIV_STATE_DIRS "$i")
    port=$(_vpiv_nth VPIV_PORTS "$i")
    if [ -z "$dir" ] || [ -z "$port" ]; then
        _vpiv_log "no card $i"
        return 1
    fi
    [ "$(_vpiv_nth VPIV_PIDS "$i")" = - ] || { _vpiv_log "card $i is running"; return 1; }
    VPIV_VERSION=${VPIV_VERSION:-5.4.3} "$VPIV_BIN" "$dir" --port "$port" \
        >>"$VPIV_DIR/card$i.log" 2>&1 </dev/null &
    pid=$!
    _vpiv_set_nth VPIV_PIDS "$i" "$pid"
    # The serial file is written before the card connects.
    local waited=0
    until [ -s "$dir/serial" ] && grep -q 'virtual PIV card serial' "$VPIV_DIR/card$i.log" 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null || [ $waited -ge 100 ]; then
            _vpiv_log "card $i did not start; log:"
            cat "$VPIV_DIR/card$i.log" >&2
            _vpiv_set_nth VPIV_PIDS "$i" -
            return 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    local -a serials
    read -r -a serials <<<"${VPIV_SERIALS-}"
    serials[i]=$(tr -d '[:space:]' <"$dir/serial")
    VPIV_SERIALS="${serials[*]}"
    export VPIV_SERIALS
    if [ "${2-}" != --no-wait ]; then
        _vpiv_wait_present "$(_vpiv_running)"
    fi
}

# vpiv_card_stop I: stop card I (pcscd then sees an empty reader); its state stays.
vpiv_card_stop() {
    local i=$1 pid
    pid=$(_vpiv_nth VPIV_PIDS "$i")
    if [ -z "$pid" ] || [ "$pid" = - ]; then
        return 0
    fi
    _vpiv_kill "$pid"
    _vpiv_set_nth VPIV_PIDS "$i" -
    # Wait until pcscd has noticed (it polls the reader), so that a following start is seen.
    local waited=0
    while [ "$(_vpiv_cards_present)" -gt "$(_vpiv_running)" ] && [ $waited -lt 100 ]; do
        sleep 0.1
        waited=$((waited + 1))
    done
}

_vpiv_running() { # number of cards started and not stopped
    local p n=0
    for p in ${VPIV_PIDS-}; do [ "$p" = - ] || n=$((n + 1)); done
    printf '%s\n' "$n"
}

_vpiv_kill() { # TERM, then KILL after 5 s; only the given pid.
    local pid=$1 waited=0
    kill "$pid" 2>/dev/null || return 0
    while kill -0 "$pid" 2>/dev/null; do
        if [ $waited -ge 50 ]; then
            kill -KILL "$pid" 2>/dev/null
            break
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    wait "$pid" 2>/dev/null || true
}

# Stops the cards and pcscd that vpiv_start started (by pid) and removes $VPIV_DIR (card state
# directories given to vpiv_start are kept). Safe to call twice and from an EXIT trap.
vpiv_stop() {
    local pid
    for pid in ${VPIV_PIDS-}; do
        [ "$pid" = - ] || _vpiv_kill "$pid"
    done
    if [ -n "${VPIV_PCSCD_PID-}" ]; then
        _vpiv_kill "$VPIV_PCSCD_PID"
    fi
    if [ -n "${VPIV_DIR-}" ] && [ -d "$VPIV_DIR" ] && [ -z "${VPIV_KEEP-}" ]; then
        rm -rf "$VPIV_DIR"
    fi
    unset VPIV_PCSCD_PID VPIV_PIDS VPIV_DIR
}
