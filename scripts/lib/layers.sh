# Checks the crates' layering (ARCHITECTURE.md): the pure crates take no runtime, network
# or storage engine, and the daemons never depend on the client library or on each other.
# Sourced by scripts/test; `cargo tree` reads Cargo.lock, so it needs no network.

# The normal dependencies of crate $1, one `name version` per line.
cairn_tree() {
    cargo tree --locked -p "$1" -e normal --prefix none --format '{p}' \
        || { echo "cargo tree -p $1 failed: cannot check the layering" >&2; return 1; }
}

cairn_check_layers() {
    local crate tree deps bad=0
    for crate in cairn-placement cairn-proto cairn-ec; do
        tree=$(cairn_tree "$crate") || return 1
        deps=$(grep -E '^(tokio|quinn|rustls|tokio-rustls|rocksdb) ' <<<"$tree" | sort -u || true)
        if [ -n "$deps" ]; then
            echo "$crate must stay pure but depends on: $deps" >&2
            bad=1
        fi
    done
    for crate in cairn-osd cairn-monitor; do
        tree=$(cairn_tree "$crate") || return 1
        deps=$(grep -E '^cairn-(client|osd|monitor) ' <<<"$tree" | grep -v "^$crate " | sort -u || true)
        if [ -n "$deps" ]; then
            echo "$crate must not depend on: $deps" >&2
            bad=1
        fi
    done
    return $bad
}
