#!/usr/bin/env bash
# Fetches the other servers the compatibility tests run against: Redis
# 6.0.16 (Debian 11's) and Valkey 8.0.1 (Debian 12 backports'), as Debian
# packages from deb.debian.org, checked against pinned SHA-256 sums and
# unpacked under .venv/servers (nothing is installed system-wide). Redis 6
# needs some of Debian 11's libraries (OpenSSL 1.1, Lua 5.1), unpacked beside it. The servers are
# started through wrappers in .venv/servers/bin.
#
# Safe to run again: it does nothing once both wrappers run. Called by
# scripts/bootstrap.sh. x86-64 Linux only (the packages are amd64).
set -euo pipefail
cd "$(dirname "$0")/.."

dest=.venv/servers
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if "$dest/bin/redis-server-6.0" --version >/dev/null 2>&1 &&
    "$dest/bin/valkey-server-8.0" --version >/dev/null 2>&1; then
    exit 0
fi
if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
    echo "fetch_servers: the pinned packages are amd64; skipping on $(uname -s)-$(uname -m)" >&2
    exit 0
fi

# path in the mirror, SHA-256 (from the suites' Packages indexes)
packages=(
    "pool/main/r/redis/redis-tools_6.0.16-1+deb11u2_amd64.deb 0329056b6cf1cc65ec1069a66bb0825ddb8307d1c6c5c93ab022fb19187138fd"
    "pool/main/o/openssl/libssl1.1_1.1.1w-0+deb11u1_amd64.deb aadf8b4b197335645b230c2839b4517aa444fd2e8f434e5438c48a18857988f7"
    "pool/main/l/lua5.1/liblua5.1-0_5.1.5-8.1+b3_amd64.deb 8f5341aba9fd26a797ff826b4aa4c626fd487ebe2bf659bc8b2cee450ec7f9f2"
    "pool/main/l/lua-cjson/lua-cjson_2.1.0+dfsg-2.1_amd64.deb 4bdf90fe39c1de756c22c3c52332bc6e694c53645c4059932e2e0917e9f07517"
    "pool/main/l/lua-bitop/lua-bitop_1.0.2-5_amd64.deb e7a286f04b4fced769b4da574e13a058dac1e6ad23660998643bf1af8a875b1a"
    "pool/main/v/valkey/valkey-tools_8.0.1+dfsg1-1~bpo12+1_amd64.deb d2c2ea67642fa9571a07138b80ae52ebe566311c952aef25a39c1d5050697853"
)

mkdir -p "$dest/debs" "$dest/redis-6.0" "$dest/valkey-8.0" "$dest/bin"
for entry in "${packages[@]}"; do
    read -r path sum <<<"$entry"
    file="$dest/debs/$(basename "$path")"
    if [ ! -f "$file" ] || ! echo "$sum  $file" | sha256sum --check --status; then
        curl --fail --silent --show-error --retry 3 --max-time 120 -o "$file.part" "$mirror/$path"
        if ! echo "$sum  $file.part" | sha256sum --check --status; then
            echo "fetch_servers: $path does not match its pinned SHA-256" >&2
            rm -f "$file.part"
            exit 1
        fi
        mv "$file.part" "$file"
    fi
    case "$path" in
    */valkey-*) root="$dest/valkey-8.0" ;;
    *) root="$dest/redis-6.0" ;;
    esac
    dpkg-deb --extract "$file" "$root"
done

# The server is the check-rdb binary under the server's name (it picks
# its mode from argv[0]).
ln -sf redis-check-rdb "$dest/redis-6.0/usr/bin/redis-server"
ln -sf valkey-check-rdb "$dest/valkey-8.0/usr/bin/valkey-server"
here=$(cd "$dest" && pwd)
for server in redis-6.0/usr/bin/redis-server valkey-8.0/usr/bin/valkey-server; do
    name=$(basename "$server")-$(dirname "$server" | cut -d/ -f1 | cut -d- -f2)
    root=$here/$(dirname "$server" | cut -d/ -f1)
    cat >"$dest/bin/$name.tmp" <<EOF
#!/bin/sh
LD_LIBRARY_PATH="$root/usr/lib/x86_64-linux-gnu\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$here/$server" "\$@"
EOF
    chmod +x "$dest/bin/$name.tmp"
    mv "$dest/bin/$name.tmp" "$dest/bin/$name"
done
"$dest/bin/redis-server-6.0" --version
"$dest/bin/valkey-server-8.0" --version
