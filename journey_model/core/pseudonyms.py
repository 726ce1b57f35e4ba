"""Keyed pseudonyms for customer ids and declared free-text fields: HMAC-SHA256 with a key from the environment.

One function, :func:`pseudonymise`, used by every path that meets a customer id — ``journey ingest`` (ids and
the mapping's ``pseudonymise:`` fields), ``journey score --pseudonymise`` (raw-id inputs) and the online API
(incoming ids, when the key is set) — so the same id and the same key give the same pseudonym everywhere:

    pseudonym = "p_" + hex(HMAC-SHA256(key, UTF-8 text of the value))[:24]

* **The key** is the UTF-8 text of the environment variable :data:`KEY_ENV` (``JOURNEY_PSEUDONYM_KEY``), at
  least :data:`MIN_KEY_CHARS` characters (``openssl rand -hex 32`` gives 64). Journey reads it and never
  writes it anywhere: not to a report, a config dump, MLflow or a log. :func:`key_id` gives a short public
  tag of a key (an HMAC of a fixed text, which reveals nothing about the key) so that outputs can say which
  key made them.
* **Nothing is reversible here**: Journey keeps no table of id -> pseudonym. Whoever holds the key can
  recompute a pseudonym from a known id (to look a customer up), never an id from a pseudonym.
* **Collisions**: 24 hex digits are 96 bits; for n distinct ids the chance that any two share a pseudonym is
  below n² / 2^97 — about 6e-14 for 100 million ids, 6e-18 for one million.
* **Speed**: values are dictionary-encoded first, so each distinct value is hashed once (an event log repeats
  each id many times); each HMAC starts from a copy of the keyed state (about 1 µs per distinct value).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping

import pyarrow as pa
import pyarrow.compute as pc

KEY_ENV = "JOURNEY_PSEUDONYM_KEY"
MIN_KEY_CHARS = 32  # 32 characters of a random hex string are 128 bits; HMAC-SHA256 wants at least that
PREFIX = "p_"
HEX_DIGITS = 24  # 96 bits: see the collision bound above


class PseudonymKeyError(ValueError):
    """The pseudonymisation key is missing or too short; the message says which variable to set."""


def check_key(key: bytes | str) -> bytes:
    """``key`` as bytes, refused when shorter than :data:`MIN_KEY_CHARS` (the key itself is never in a message)."""
    raw = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    if len(raw) < MIN_KEY_CHARS:
        raise PseudonymKeyError(
            f"the pseudonymisation key in {KEY_ENV} is {len(raw)} bytes; at least {MIN_KEY_CHARS} are needed "
            "(e.g. the output of `openssl rand -hex 32`)"
        )
    return raw


def key_from_env(environ: Mapping[str, str] | None = None, *, required: bool = True) -> bytes | None:
    """The key in :data:`KEY_ENV`; None when unset and not ``required``, else :class:`PseudonymKeyError`."""
    text = (os.environ if environ is None else environ).get(KEY_ENV, "")
    if not text:
        if required:
            raise PseudonymKeyError(f"pseudonymisation is on but {KEY_ENV} is not set; set it to the bank's secret "
                                    "key (from its secret manager), the same key for ingest, scoring and the API")
        return None
    return check_key(text)


def key_id(key: bytes) -> str:
    """A short public tag of ``key`` (which key made these pseudonyms), from which the key cannot be found."""
    return hmac.new(key, b"journey pseudonym key id", hashlib.sha256).hexdigest()[:12]


def pseudonym(value: str, key: bytes) -> str:
    """The pseudonym of one value (the scalar form of :func:`pseudonymise`)."""
    return PREFIX + hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()[:HEX_DIGITS]


def pseudonymise(values: pa.Array | pa.ChunkedArray, key: bytes) -> pa.Array:
    """The pseudonym of every value (as text; nulls stay null), as a string array of the same length."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not pa.types.is_string(values.type):
        values = values.cast(pa.string())
    if len(values) == 0:
        return pa.array([], pa.string())
    encoded = pc.dictionary_encode(values)
    base = hmac.new(key, digestmod=hashlib.sha256)
    out: list[str] = []
    for text in encoded.dictionary.to_pylist():
        mac = base.copy()
        mac.update(text.encode("utf-8"))
        out.append(PREFIX + mac.hexdigest()[:HEX_DIGITS])
    return pa.array(out, pa.string()).take(encoded.indices)


__all__ = ["HEX_DIGITS", "KEY_ENV", "MIN_KEY_CHARS", "PREFIX", "PseudonymKeyError", "check_key", "key_from_env",
           "key_id", "pseudonym", "pseudonymise"]
