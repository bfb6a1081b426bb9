"""Verifies every DKIM-Signature of a message with dkimpy (Debian's python3-dkim), an
implementation independent of relaygate, looking the keys up in the test DNS server.

Usage: dkim_verify.py DNS_PORT < message
Prints one JSON object: {"signatures": [{"d": ..., "s": ..., "a": ..., "ok": bool}, ...]}.
"""
import json
import sys

import dkim
import dns.resolver

port = int(sys.argv[1])
resolver = dns.resolver.Resolver(configure=False)
resolver.nameservers = ["127.0.0.1"]
resolver.port = port


def txt(name, timeout=5):
    if isinstance(name, bytes):
        name = name.decode()
    try:
        answer = resolver.resolve(name, "TXT", lifetime=timeout)
    except Exception:
        return None
    return b"".join(b"".join(r.strings) for r in answer)


message = sys.stdin.buffer.read()
d = dkim.DKIM(message)
found = []
count = sum(1 for name, _ in d.headers if name.lower() == b"dkim-signature")
for i in range(count):
    try:
        ok = bool(d.verify(idx=i, dnsfunc=txt))
    except Exception:  # a broken signature is a failed one
        ok = False
    sig = d.signature_fields if hasattr(d, "signature_fields") else {}
    found.append(
        {
            "d": (sig.get(b"d") or b"").decode(),
            "s": (sig.get(b"s") or b"").decode(),
            "a": (sig.get(b"a") or b"").decode(),
            "ok": ok,
        }
    )
print(json.dumps({"signatures": found}))
