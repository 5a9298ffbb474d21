# Checks the crates' layering (ARCHITECTURE.md): the pure crates take no runtime, network
# or storage engine, and the daemons never depend on the client library or on each other.
# Sourced by scripts/test; `cargo tree` reads Cargo.lock, so it needs no network.

cairn_check_layers() {
    local crate deps bad=0
    for crate in cairn-placement cairn-proto cairn-ec; do
        deps=$(cargo tree --locked -p "$crate" -e normal --prefix none 2>/dev/null \
            | grep -E '^(tokio|quinn|rustls|tokio-rustls|rocksdb) ' | sort -u || true)
        if [ -n "$deps" ]; then
            echo "$crate must stay pure but depends on: $deps" >&2
            bad=1
        fi
    done
    for crate in cairn-osd cairn-monitor; do
        deps=$(cargo tree --locked -p "$crate" -e normal --prefix none 2>/dev/null \
            | grep -E '^cairn-(client|osd|monitor) ' | grep -v "^$crate " | sort -u || true)
        if [ -n "$deps" ]; then
            echo "$crate must not depend on: $deps" >&2
            bad=1
        fi
    done
    return $bad
}
