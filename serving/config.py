"""Settings of the online API, read from ``JOURNEY_*`` environment variables when the service starts.

BentoML imports the service module in every worker process, so settings travel as environment variables:
``journey serve`` sets them from its options, ``bentoml serve serving.service:JourneyService`` reads what
the shell exported, and tests set them before starting the service. Each field names its variable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields

DEFAULT_MODEL_URI = "models:/journey-synth_bank-outcome@champion"  # what `journey demo` registers and promotes


class ServingConfigError(ValueError):
    """A JOURNEY_* variable holds a value the service cannot use."""


def _env(name: str) -> dict[str, str]:
    return {"env": name}


@dataclass
class ServingConfig:
    """What the service loads and the limits it enforces on every request."""

    model_uri: str = field(default=DEFAULT_MODEL_URI, metadata=_env("JOURNEY_MODEL_URI"))  # bundle folder or MLflow URI
    max_customers_per_request: int = field(default=256, metadata=_env("JOURNEY_MAX_CUSTOMERS"))  # customers in one request
    max_events_per_customer: int = field(default=5000, metadata=_env("JOURNEY_MAX_EVENTS"))  # events per customer in one request
    max_batch_customers: int = field(default=256, metadata=_env("JOURNEY_MAX_BATCH"))  # customers in one forward pass
    max_batch_wait_ms: float = field(default=0.0, metadata=_env("JOURNEY_BATCH_WAIT_MS"))  # extra wait for a batch to fill, ms
    state_max_customers: int = field(default=10_000, metadata=_env("JOURNEY_STATE_CUSTOMERS"))  # incremental states held
    top_reasons: int = field(default=3, metadata=_env("JOURNEY_TOP_REASONS"))  # reasons per task in /explain
    max_oov_reported: int = field(default=50, metadata=_env("JOURNEY_MAX_OOV_REPORTED"))  # OOV values listed per customer
    torch_threads: int = field(default=1, metadata=_env("JOURNEY_TORCH_THREADS"))  # intra-op threads per worker
    workers: int = field(default=1, metadata=_env("JOURNEY_WORKERS"))  # worker processes, each with the model

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            lowest = 0 if f.name == "max_batch_wait_ms" else 1
            if f.type in ("int", "float") and value < lowest:
                raise ServingConfigError(f"{f.metadata['env']} = {value}: must be >= {lowest}")

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ServingConfig:
        environ = dict(os.environ if environ is None else environ)
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = environ.get(f.metadata["env"])
            if raw is None or raw == "":
                continue
            try:
                values[f.name] = int(raw) if f.type == "int" else float(raw) if f.type == "float" else raw
            except ValueError as error:
                raise ServingConfigError(f"{f.metadata['env']} = {raw!r}: expected a {f.type}") from error
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """The environment variables that make :meth:`from_env` return this config."""
        return {f.metadata["env"]: str(getattr(self, f.name)) for f in fields(self)}

    def limits(self) -> dict[str, int]:
        """The limits a client must respect (reported by GET /metadata)."""
        return {
            "max_customers_per_request": self.max_customers_per_request,
            "max_events_per_customer": self.max_events_per_customer,
            "max_batch_customers": self.max_batch_customers,
            "state_max_customers": self.state_max_customers,
        }
