#!/usr/bin/env python3
"""ccxt's async Gemini client calling the raw private endpoint with the `account` field:
await exchange.private_post_v1_order_cancel_all({'account': name}), --concurrency calls at once
through asyncio.gather and a semaphore, ccxt's own rate limiter at --rate (off when 0).

Two things a user has to do with ccxt 4.5 (both found by running it, see bench/README.md):
  * point urls['api']['private'] at the exchange (here the simulator);
  * get past ccxt's refusal of master keys: gemini.sign() raises AuthenticationError
    "requires an account-key, master-keys are not-supported" unless the key string contains
    "account". The subclass below keeps ccxt's signing (its incrementing_nonce(), a string of
    milliseconds, strictly increasing per instance) and only drops that check.
InvalidNonce is retried at once (up to 20 times), RateLimitExceeded and network errors after a
short back-off (up to 5 tries).
"""

import asyncio
import hashlib
import time

import ccxt.async_support as ccxt

from _common import finish, log, parse_args, read_accounts


class GeminiMaster(ccxt.gemini):
    """ccxt's gemini with master keys allowed (the `account` field is sent by the caller)."""

    def sign(self, path, api=["public"], method="GET", params={}, headers=None, body=None):
        if api[0] != "private":
            return super().sign(path, api, method, params, headers, body)
        self.check_required_credentials()
        url = "/" + self.implode_params(path, params)
        query = self.omit(params, self.extract_params(path))
        payload = self.string_to_base64(self.json(self.extend(
            {"request": url, "nonce": str(self.incrementing_nonce())}, query)))
        signature = self.hmac(self.encode(payload), self.encode(self.secret), hashlib.sha384)
        headers = {
            "Content-Type": "text/plain",
            "X-GEMINI-APIKEY": self.apiKey,
            "X-GEMINI-PAYLOAD": payload,
            "X-GEMINI-SIGNATURE": signature,
        }
        return {"url": self.urls["api"]["private"] + url, "method": method,
                "body": self.json(query), "headers": headers}


async def main():
    args = parse_args(__doc__)
    accounts = read_accounts(args.accounts_csv)
    exchange = GeminiMaster({
        "apiKey": args.key,
        "secret": args.secret,
        "enableRateLimit": args.rate > 0,
        "rateLimit": 1000 / args.rate if args.rate > 0 else 0,
        "timeout": 10000,
    })
    exchange.urls["api"]["private"] = args.base_url
    sem = asyncio.Semaphore(args.concurrency)
    stats = {"sent": 0}
    ids = {}

    async def cancel_all(account):
        async with sem:
            tries = nonce_retries = 0
            while tries < 5 and nonce_retries < 20:
                stats["sent"] += 1
                try:
                    reply = await exchange.private_post_v1_order_cancel_all({"account": account})
                    ids[account] = [int(i) for i in reply["details"]["cancelledOrders"]]
                    return
                except ccxt.InvalidNonce:
                    nonce_retries += 1
                except (ccxt.RateLimitExceeded, ccxt.NetworkError, ccxt.ExchangeNotAvailable) as e:
                    tries += 1
                    log(f"{account}: {type(e).__name__}: {e}")
                    await asyncio.sleep(0.5 * tries)
                except ccxt.BaseError as e:
                    log(f"{account}: {type(e).__name__}: {e}")
                    return
            log(f"{account}: giving up")

    started = time.monotonic()
    try:
        await asyncio.gather(*(cancel_all(a) for a in accounts))
    finally:
        await exchange.close()
    failed = sum(1 for a in accounts if a not in ids)
    return finish(args, "ccxt", accounts, stats["sent"], started, failed, ids)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
