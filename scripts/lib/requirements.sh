# Checks what building cairn needs beyond the Rust toolchain, and installs what is missing
# (as root on Debian/Ubuntu) or says exactly what to install. Sourced by scripts/dev-up and
# scripts/test.
#
# - a C++ compiler: RocksDB is C++, built by the rocksdb crate;
# - libclang and clang's own headers: bindgen generates RocksDB's Rust bindings with them.

cairn_missing_packages() {
    local missing=()
    command -v cargo >/dev/null || {
        echo "cargo is not installed: install the Rust toolchain (https://rustup.rs) first" >&2
        return 2
    }
    command -v c++ >/dev/null || missing+=(build-essential)
    # bindgen loads libclang at build time and needs clang's builtin headers (stddef.h).
    if ! compgen -G "/usr/lib/llvm-*/lib/libclang*.so*" >/dev/null \
        && ! compgen -G "/usr/lib/*/libclang*.so*" >/dev/null; then
        missing+=(libclang-dev)
    elif ! compgen -G "/usr/lib/llvm-*/lib/clang/*/include/stddef.h" >/dev/null; then
        missing+=(libclang-dev)
    fi
    echo "${missing[@]}"
}

cairn_requirements() {
    local missing
    missing=$(cairn_missing_packages) || exit 1
    [ -z "$missing" ] && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing what the build needs: $missing" >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        # shellcheck disable=SC2086 # one word per package
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >&2
        missing=$(cairn_missing_packages) || exit 1
        [ -z "$missing" ] && return 0
    fi
    echo "building cairn needs system packages that are missing: $missing" >&2
    echo "install them with: sudo apt-get install -y $missing" >&2
    exit 1
}
