#!/usr/bin/env bash
# Runs every check and test of relaygate, as CI does. Installs, from Debian, the real
# peers the tests need when they are missing (needs root or sudo for that).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v msmtp >/dev/null 2>&1 || need+=(msmtp)            # real SASL client (GNU SASL)
command -v microsocks >/dev/null 2>&1 || need+=(microsocks)  # real SOCKS5 server
[ -x /usr/sbin/dovecot ] || need+=(dovecot-core dovecot-submissiond)  # real SASL server
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)  # store tests (Redis 7)
# DKIM verification by an independent implementation (dkimpy, Ed25519 through PyNaCl).
/usr/bin/python3 -c 'import dkim, nacl, dns.resolver' >/dev/null 2>&1 \
  || need+=(python3-dkim python3-nacl python3-dnspython)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing test peers: ${need[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}"
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --all-features -q -- -D warnings
cargo test -q --workspace --all-features
