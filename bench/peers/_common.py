"""What the three peers share: argv, the accounts CSV, the JSON line, and (for two of them) signing.

A peer is what an ops engineer would write in an afternoon. Each one:
  peer BASE_URL ACCOUNTS_CSV [--concurrency N] [--rate PER_SEC] [--ids-out FILE]
reads the key and secret from GEMINI_API_KEY / GEMINI_API_SECRET, sends one signed
POST /v1/order/cancel/all per account (with the `account` field), and prints one JSON line:
  {"peer": ..., "accounts": N, "requests": N, "wall_ms": N, "failed": N, "orders_cancelled": N}
--ids-out writes {"account": [cancelled order ids]} so the harness can check it against the
simulator's ledger. The harness is the only caller; these scripts assert nothing.
"""

import argparse
import base64
import csv
import hashlib
import hmac
import json
import os
import sys
import time

CANCEL_ALL = "/v1/order/cancel/all"


def parse_args(description, prove=False):
    p = argparse.ArgumentParser(description=description)
    if prove:
        p.add_argument("--prove", action="store_true",
                       help="list, cancel-all, list per account (three calls)")
    p.add_argument("base_url")
    p.add_argument("accounts_csv")
    p.add_argument("--concurrency", type=int, default=int(os.environ.get("PEER_CONCURRENCY", "32")))
    p.add_argument("--rate", type=float, default=float(os.environ.get("PEER_RATE", "5")),
                   help="requests per second for the key; 0 = no client-side limit")
    p.add_argument("--ids-out", help="write the cancelled ids per account to this JSON file")
    args = p.parse_args()
    args.key = os.environ["GEMINI_API_KEY"]
    args.secret = os.environ["GEMINI_API_SECRET"]
    args.base_url = args.base_url.rstrip("/")
    return args


def read_accounts(path):
    with open(path, newline="") as f:
        rows = csv.DictReader(line for line in f if line.strip() and not line.startswith("#"))
        return [r["account"] for r in rows
                if r.get("enabled", "true").strip().lower() in ("true", "yes", "1", "")]


class Nonces:
    """Milliseconds since the epoch, +1 when the clock has not moved (the spec's recipe)."""

    def __init__(self):
        self.last = 0

    def next(self):
        self.last = max(int(time.time() * 1000), self.last + 1)
        return self.last


def signed_headers(key, secret, payload):
    b64 = base64.b64encode(json.dumps(payload).encode())
    return {
        "Content-Type": "text/plain",
        "Content-Length": "0",
        "Cache-Control": "no-cache",
        "X-GEMINI-APIKEY": key,
        "X-GEMINI-PAYLOAD": b64.decode(),
        "X-GEMINI-SIGNATURE": hmac.new(secret.encode(), b64, hashlib.sha384).hexdigest(),
    }


def finish(args, peer, accounts, requests, started, failed, ids, extra=None):
    wall_ms = round((time.monotonic() - started) * 1000)
    if args.ids_out:
        with open(args.ids_out, "w") as f:
            json.dump(ids, f)
    print(json.dumps({
        "peer": peer,
        "accounts": len(accounts),
        "requests": requests,
        "wall_ms": wall_ms,
        "failed": failed,
        "orders_cancelled": sum(len(v) for v in ids.values()),
        **(extra or {}),
    }), flush=True)
    return 0


def log(msg):
    print(msg, file=sys.stderr, flush=True)
