# shellcheck shell=bash
# Sourced helper: install Debian packages for commands that are missing.
#
#   ensure_packages "softhsm2-util:softhsm2" "pkcs11-tool:opensc"
#
# Each argument is "command:package", or "/path/glob:package" for a file a
# package provides (e.g. a library to link against). Packages whose command is
# already on PATH (or whose file exists) are skipped; the rest are installed with one apt-get run (after
# apt-get update). Needs root when anything is missing.

ensure_packages() {
    local pair cmd pkg
    local -a missing=()
    for pair in "$@"; do
        cmd=${pair%%:*}
        pkg=${pair#*:}
        if [[ $cmd == /* ]]; then
            # A file (glob) the package provides.
            if compgen -G "$cmd" >/dev/null; then
                continue
            fi
        elif command -v "$cmd" >/dev/null 2>&1; then
            continue
        fi
        {
            # Skip duplicates (several commands may come from one package).
            case " ${missing[*]-} " in
                *" $pkg "*) ;;
                *) missing+=("$pkg") ;;
            esac
        }
    done

    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi

    local -a sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            echo "error: missing packages: ${missing[*]}" >&2
            echo "       install them as root: apt-get install -y ${missing[*]}" >&2
            return 1
        fi
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "error: missing packages: ${missing[*]} (and apt-get is not available)" >&2
        return 1
    fi

    echo "installing: ${missing[*]}" >&2
    ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}
