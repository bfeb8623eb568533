#!/usr/bin/env python3
"""asyncio + aiohttp: a semaphore of --concurrency requests in flight and a token bucket at
--rate (0 = no bucket). The nonce is taken right before sending, after the bucket; InvalidNonce
(two requests overtaking each other) is retried at once with a fresh nonce, 429 and 5xx after a
short back-off; an account is given up after 5 tries (InvalidNonce retries not counted, up to 20).
"""

import asyncio
import time

import aiohttp

from _common import CANCEL_ALL, Nonces, finish, log, parse_args, read_accounts, signed_headers


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
    args = parse_args(__doc__)
    accounts = read_accounts(args.accounts_csv)
    sem = asyncio.Semaphore(args.concurrency)
    bucket = TokenBucket(args.rate)
    nonces = Nonces()
    stats = {"sent": 0}
    ids = {}

    async def cancel_all(session, account):
        async with sem:
            tries = nonce_retries = 0
            while tries < 5 and nonce_retries < 20:
                await bucket.take()
                payload = {"request": CANCEL_ALL, "nonce": nonces.next(), "account": account}
                stats["sent"] += 1
                try:
                    async with session.post(args.base_url + CANCEL_ALL,
                                            headers=signed_headers(args.key, args.secret, payload)) as r:
                        body = await r.json(content_type=None)
                        status = r.status
                except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
                    tries += 1
                    log(f"{account}: {e!r}")
                    await asyncio.sleep(0.5 * tries)
                    continue
                if status == 200:
                    ids[account] = body["details"]["cancelledOrders"]
                    return
                reason = body.get("reason")
                if reason == "InvalidNonce":
                    nonce_retries += 1
                    continue
                tries += 1
                if status == 429 or status >= 500:
                    await asyncio.sleep(0.5 * tries)
                    continue
                log(f"{account}: {status} {reason}: {body.get('message')}")
                return
            log(f"{account}: giving up")

    started = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=10)
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        await asyncio.gather(*(cancel_all(session, a) for a in accounts))
    failed = sum(1 for a in accounts if a not in ids)
    return finish(args, "aiohttp", accounts, stats["sent"], started, failed, ids)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
