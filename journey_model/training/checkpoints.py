"""Lightning checkpoints Journey can trust: a sha256 beside each one, checked before any is read.

Every checkpoint Journey writes (``best.ckpt``, ``last.ckpt``) gets a sidecar ``<name>.ckpt.sha256`` in
``sha256sum`` format, written by :class:`VerifiedCheckpoint` right after the checkpoint. Resuming and
restoring the best model first check the file against it (:func:`verify_checkpoint`) — a truncated, zeroed
or changed checkpoint is a :class:`CheckpointError` naming the file, never a traceback or a silently
different run — and then read it with ``torch.load(weights_only=True)``: tensors and plain containers only,
nothing is unpickled that could run code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from journey_model.core.files import unpickling_error_reason, write_text_atomic
from journey_model.core.fingerprint import file_digest

CHECKSUM_SUFFIX = ".sha256"


class CheckpointError(ValueError):
    """A checkpoint that cannot be trusted or read; the message names the file."""


def checksum_path(checkpoint: str | Path) -> Path:
    """The sidecar holding ``checkpoint``'s sha256: ``last.ckpt`` -> ``last.ckpt.sha256``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name + CHECKSUM_SUFFIX)


def write_checksum(checkpoint: str | Path) -> Path:
    """Record ``checkpoint``'s sha256 beside it (``sha256sum -c`` reads the sidecar too)."""
    checkpoint = Path(checkpoint)
    return write_text_atomic(checksum_path(checkpoint), f"{file_digest([checkpoint])}  {checkpoint.name}\n")


def verify_checkpoint(checkpoint: str | Path) -> Path:
    """``checkpoint`` if its contents match the sha256 recorded beside it; else a :class:`CheckpointError`."""
    checkpoint = Path(checkpoint)
    sidecar = checksum_path(checkpoint)
    if not checkpoint.is_file():
        raise CheckpointError(f"{checkpoint}: no such checkpoint")
    try:
        expected = sidecar.read_text(encoding="utf-8").split()[0].lower()
    except FileNotFoundError:
        raise CheckpointError(
            f"{checkpoint}: no {sidecar.name} beside it, so its integrity cannot be checked (Journey writes one with "
            f"every checkpoint); if you trust the file: sha256sum {checkpoint.name} > {sidecar.name}") from None
    except (OSError, UnicodeDecodeError, IndexError) as error:
        raise CheckpointError(f"{sidecar}: unreadable checksum of {checkpoint.name} ({error})") from error
    actual = file_digest([checkpoint])
    if actual != expected:
        raise CheckpointError(
            f"{checkpoint}: corrupted or changed since it was written ({checkpoint.stat().st_size} bytes, sha256 "
            f"{actual[:16]}…; {sidecar.name} records {expected[:16]}…); not using it: resume from another "
            "checkpoint or start again without --resume")
    return checkpoint


def load_checkpoint(checkpoint: str | Path) -> dict[str, Any]:
    """A verified checkpoint's contents, read with ``weights_only=True`` (no arbitrary unpickling)."""
    checkpoint = verify_checkpoint(checkpoint)
    try:
        return torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError … for unreadable files
        raise CheckpointError(f"{checkpoint}: not a readable checkpoint ({unpickling_error_reason(error)}); it is "
                              "read as plain weights only (weights_only=True)") from error


class VerifiedCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` that writes each checkpoint's sha256 sidecar (global rank 0) and removes
    it with the checkpoint."""

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        if trainer.is_global_zero:
            write_checksum(filepath)

    def _remove_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        super()._remove_checkpoint(trainer, filepath)
        if trainer.is_global_zero:
            checksum_path(filepath).unlink(missing_ok=True)


__all__ = ["CHECKSUM_SUFFIX", "CheckpointError", "VerifiedCheckpoint", "checksum_path", "load_checkpoint",
           "verify_checkpoint", "write_checksum"]
