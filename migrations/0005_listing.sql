-- gemini-sweep audit trail, version 5: how far a run's listing of the group can be trusted.
--
-- `run --all-accounts` sweeps the accounts `/v1/account/list` lists. When the pages cannot prove
-- that every account was listed (a full page that adds nothing new, pages that fit neither
-- reading of `timestamp`), the run still sweeps the listed accounts but can never be
-- `completed`: `listing` says so, and `listing_note` says why. `listing_note` also names listed
-- open exchange accounts whose nickname could not be sent (their orders, if any, stay open).

-- NULL for runs over an accounts CSV (nothing was listed).
ALTER TABLE runs ADD COLUMN listing TEXT CHECK (listing IN ('complete', 'possibly_incomplete'));
-- Why the run cannot vouch for every account of the group; NULL when it can.
ALTER TABLE runs ADD COLUMN listing_note TEXT;
