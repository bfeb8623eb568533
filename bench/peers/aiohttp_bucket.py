#!/usr/bin/env python3
"""asyncio + aiohttp: a semaphore of --concurrency requests in flight and a token bucket at
--rate (0 = no bucket). The nonce is taken right before sending, after the bucket; InvalidNonce
(two requests overtaking each other) is retried at once with a fresh nonce, 429 and 5xx after a
short back-off; an account is given up after 5 tries (InvalidNonce retries not counted, up to 20).

--prove: the same three calls per account as gemini-sweep's list-before order: list the open
orders (POST /v1/orders), cancel-all, list again; an account still showing open orders after
counts as failed. The JSON line then also carries `last_cancel_ms` (start to the reply of the
last accepted cancel-all), so its time to flat can be compared with its wall time.
"""

import asyncio
import time

import aiohttp

from _common import CANCEL_ALL, Nonces, finish, log, parse_args, read_accounts, signed_headers

LIST_ORDERS = "/v1/orders"


class TokenBucket:
    def __init__(self, rate, burst=1):
        self.rate, self.capacity = rate, burst
        self.tokens, self.stamp = burst, time.monotonic()
        self.lock = asyncio.Lock()

    async def take(self):
        if self.rate <= 0:
            return
        async with self.lock:
            while True:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return
                await asyncio.sleep((1 - self.tokens) / self.rate)


async def main():
    args = parse_args(__doc__, prove=True)
    accounts = read_accounts(args.accounts_csv)
    sem = asyncio.Semaphore(args.concurrency)
    bucket = TokenBucket(args.rate)
    nonces = Nonces()
    stats = {"sent": 0, "last_cancel": None}
    ids = {}
    still_open = set()

    async def call(session, account, path):
        """The reply's body on 200, else None (after the retries)."""
        tries = nonce_retries = 0
        while tries < 5 and nonce_retries < 20:
            await bucket.take()
            payload = {"request": path, "nonce": nonces.next(), "account": account}
            stats["sent"] += 1
            try:
                async with session.post(args.base_url + path,
                                        headers=signed_headers(args.key, args.secret, payload)) as r:
                    body = await r.json(content_type=None)
                    status = r.status
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
                tries += 1
                log(f"{account}: {e!r}")
                await asyncio.sleep(0.5 * tries)
                continue
            if status == 200:
                return body
            reason = body.get("reason") if isinstance(body, dict) else None
            if reason == "InvalidNonce":
                nonce_retries += 1
                continue
            tries += 1
            if status == 429 or status >= 500:
                await asyncio.sleep(0.5 * tries)
                continue
            log(f"{account}: {status} {reason}: {body.get('message') if isinstance(body, dict) else body}")
            return None
        log(f"{account}: giving up")
        return None

    async def cancel_all(session, account):
        async with sem:
            if args.prove and await call(session, account, LIST_ORDERS) is None:
                return
            body = await call(session, account, CANCEL_ALL)
            if body is None:
                return
            stats["last_cancel"] = time.monotonic()
            ids[account] = body["details"]["cancelledOrders"]
            if args.prove:
                after = await call(session, account, LIST_ORDERS)
                if after is None or after:
                    still_open.add(account)

    started = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=10)
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        await asyncio.gather(*(cancel_all(session, a) for a in accounts))
    failed = sum(1 for a in accounts if a not in ids or a in still_open)
    extra = {}
    if stats["last_cancel"] is not None:
        extra["last_cancel_ms"] = round((stats["last_cancel"] - started) * 1000)
    return finish(args, "aiohttp-prove" if args.prove else "aiohttp", accounts, stats["sent"],
                  started, failed, ids, extra)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
