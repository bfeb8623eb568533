#!/usr/bin/env python3
"""The afternoon script: a `requests` loop, one signed cancel-all per account, one at a time.

Sequential, so its own nonces can never race; it still retries InvalidNonce (another process on
the key) and 429s with a short back-off, and gives an account up after 5 tries. --concurrency is
accepted and ignored. --rate spaces the calls (0 = as fast as the loop goes).
"""

import time

import requests

from _common import CANCEL_ALL, Nonces, finish, log, parse_args, read_accounts, signed_headers


def main():
    args = parse_args(__doc__)
    accounts = read_accounts(args.accounts_csv)
    session = requests.Session()
    nonces = Nonces()
    interval = 1 / args.rate if args.rate > 0 else 0
    sent = 0
    failed = 0
    ids = {}
    started = time.monotonic()
    next_slot = started
    for account in accounts:
        for attempt in range(1, 6):
            if interval:
                time.sleep(max(0, next_slot - time.monotonic()))
                next_slot = max(next_slot, time.monotonic()) + interval
            payload = {"request": CANCEL_ALL, "nonce": nonces.next(), "account": account}
            sent += 1
            try:
                r = session.post(args.base_url + CANCEL_ALL,
                                 headers=signed_headers(args.key, args.secret, payload), timeout=10)
                body = r.json()
            except (requests.RequestException, ValueError) as e:
                log(f"{account}: attempt {attempt}: {e}")
                time.sleep(0.5 * attempt)
                continue
            if r.status_code == 200:
                ids[account] = body["details"]["cancelledOrders"]
                break
            reason = body.get("reason")
            if reason == "InvalidNonce":
                continue
            if r.status_code == 429 or r.status_code >= 500:
                time.sleep(0.5 * attempt)
                continue
            log(f"{account}: {r.status_code} {reason}: {body.get('message')}")
            break
        else:
            log(f"{account}: giving up")
        if account not in ids:
            failed += 1
    return finish(args, "requests-loop", accounts, sent, started, failed, ids)


if __name__ == "__main__":
    raise SystemExit(main())
