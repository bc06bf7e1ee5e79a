"""Stored JSON texts packed for the write-ahead log: raw deflate against a fixed dictionary.

PostgreSQL compresses a value only when its row passes about 2 KB (TOAST), and an outbox
envelope is 600 to 900 bytes, most of it the same keys and words in every event. Every byte a
row holds is written to the WAL, replicated to the standby and read back by the relay and the
feed, so the writer packs the text itself: deflate primed with a dictionary of what envelopes
have in common keeps a 650-byte envelope in about 170 (`docs/performance.md`, "WAL per
transfer"). Unpacking gives back the exact bytes that were packed, which is what is sent,
signed and served.

A packed value is one tag byte, then the deflate stream. The tag names the dictionary, and a
dictionary never changes once values have been packed with it: a new one gets a new tag, and
the old tag stays readable for as long as a row may hold it.
"""

from __future__ import annotations

import zlib

# Deflate finds repeats up to 32 KiB back and codes near ones in fewer bits, so what nearly
# every value repeats comes last. Keys and fixed words only: no ids, times or amounts.
_DICTIONARY_1 = b"".join(
    [
        b'"normal_balance":"debit","normal_balance":"credit","min_balance":null,',
        b'"status":"active","status":"closed","code":"',
        b'"ledger.category.created","ledger.category.updated",',
        b'"ledger.category.account_added","ledger.category.account_removed",',
        b'"ledger.account.monitor_triggered","ledger.account.updated",',
        b'"ledger.transfer.pending","ledger.transfer.voided","ledger.transfer.expired",',
        b'"state":"pending","state":"voided","state":"expired","timeout_at":"',
        b'"previous_attributes":{"metadata":{},"reference":"',
        b'"type":"ledger.account.created","data":{"id":"',
        b'"currency":"EUR","currency":"USD","metadata":{},"version":1,',
        b'"balances":{"posted":0,"available":0,"posted_debits":0,"posted_credits":0,',
        b'"pending_debits":0,"pending_credits":0}}}',
        b'"type":"ledger.transfer.posted","subject":"',
        b'","time":"2026-12-07T15:50:56.036842Z","datacontenttype":"application/json",',
        b'"traceparent":"00-',
        b'-01","data":{"id":"',
        b'","debit_account_id":"',
        b'","credit_account_id":"',
        b'","amount":',
        b',"currency":"USD","state":"posted","posted_amount":',
        b',"reference":null,"metadata":{},"timeout_at":null,"created_at":"',
        b'","updated_at":"',
        b'","reversal_of":null}}',
        b'{"specversion":"1.0","id":"',
        b'","source":"ledger","type":"ledger.account.balance_changed","subject":"',
        b'","time":"',
        b'","datacontenttype":"application/json","sequence":"0000000000000000',
        b'","traceparent":"00-',
        b'-03","data":{"account_id":"',
        b'","transfer_id":"',
        b'","version":',
        b',"balances":{"posted":',
        b',"available":',
        b',"posted_debits":',
        b',"posted_credits":',
        b',"pending_debits":0,"pending_credits":0}}}',
    ]
)

_TAG_DEFLATE_1 = 1
_DICTIONARIES = {_TAG_DEFLATE_1: _DICTIONARY_1}
_LEVEL = 6  # 9 saves a few bytes more at twice the time


class PackedValueError(ValueError):
    """A stored packed value that cannot be read: an unknown tag or a broken stream."""


def pack(text: bytes) -> bytes:
    """`text` packed with the current dictionary."""
    compressor = zlib.compressobj(
        _LEVEL, zlib.DEFLATED, -15, 9, zlib.Z_DEFAULT_STRATEGY, _DICTIONARY_1
    )
    return bytes([_TAG_DEFLATE_1]) + compressor.compress(text) + compressor.flush()


def unpack(packed: bytes) -> bytes:
    """The exact bytes `pack` was given."""
    if not packed:
        raise PackedValueError("an empty packed value")
    dictionary = _DICTIONARIES.get(packed[0])
    if dictionary is None:
        raise PackedValueError(f"a packed value with the unknown tag {packed[0]}")
    decompressor = zlib.decompressobj(-15, dictionary)
    try:
        text = decompressor.decompress(packed[1:]) + decompressor.flush()
    except zlib.error as exc:
        raise PackedValueError(f"a packed value that does not inflate: {exc}") from exc
    if not decompressor.eof or decompressor.unused_data:
        raise PackedValueError("a packed value whose stream is cut short or followed by bytes")
    return text
