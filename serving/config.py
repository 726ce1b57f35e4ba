"""Settings of the online API: one typed dataclass, read from environment variables when the service starts.

BentoML imports the service module in every worker process, so settings travel as environment variables:
``journey serve`` sets them from its options (generated from :class:`ServingConfig` by
:mod:`journey_model.core.settings`, like every subcommand's), ``bentoml serve serving.service:JourneyService``
reads what the shell exported, and tests set them before starting the service. Each field names its variable.

Serving settings follow BentoML 1.4's own conventions where they fit: where ``bentoml serve`` has a setting
(``--host``, ``--port``, ``--timeout``), the option has its name and the field reads BentoML's variable
(``BENTOML_HOST``, ``BENTOML_PORT``, ``BENTOML_TIMEOUT``); ``--workers`` is the service's ``workers``. The rest
are Journey's own, ``JOURNEY_*``. Precedence for `journey serve`, lowest first: the defaults, the environment,
``--config FILE``, the options given.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from journey_model.core.settings import ConfigError, Settings, option

DEFAULT_MODEL_URI = "models:/journey-synth_bank-outcome@champion"  # what `journey demo` registers and promotes


class ServingConfigError(ConfigError):
    """A serving setting (a JOURNEY_* variable or a `journey serve` option) holds a value the service cannot use."""


@dataclass
class ServingConfig:
    """What the service loads, the limits it enforces on every request, and where it listens."""

    model_uri: str = option(DEFAULT_MODEL_URI, "model bundle folder or MLflow model URI (models:/NAME@ALIAS …)",
                            flag="--model", env="JOURNEY_MODEL_URI")
    max_customers_per_request: int = option(256, "customers per request at most [customers]",
                                            flag="--max-customers", env="JOURNEY_MAX_CUSTOMERS")
    max_events_per_customer: int = option(5000, "events per customer per request at most [events]",
                                          flag="--max-events", env="JOURNEY_MAX_EVENTS")
    max_batch_customers: int = option(256, "customers per forward pass across concurrent requests [customers]",
                                      flag="--max-batch", env="JOURNEY_MAX_BATCH")
    max_batch_wait_ms: float = option(0.0, "extra wait for a batch to fill [ms]", flag="--batch-wait-ms",
                                      env="JOURNEY_BATCH_WAIT_MS")
    state_max_customers: int = option(10_000, "incremental states held at most per worker, least recently used "
                                      "evicted [customers]", flag="--state-customers", env="JOURNEY_STATE_CUSTOMERS")
    top_reasons: int = option(3, "reasons per task in /explain", env="JOURNEY_TOP_REASONS")
    max_oov_reported: int = option(50, "out-of-vocabulary values listed per customer", env="JOURNEY_MAX_OOV_REPORTED")
    torch_threads: int = option(1, "intra-op torch threads per worker [threads]", env="JOURNEY_TORCH_THREADS")
    workers: int = option(1, "worker processes, each with the model and its own batcher and incremental state "
                          "(the BentoML service's workers) [processes]", env="JOURNEY_WORKERS")
    max_body_mb: float = option(8.0, "request body size at most, checked before parsing: a larger Content-Length "
                                "or streamed body gets 413 at once [MiB]", env="JOURNEY_MAX_BODY_MB")
    max_inflight_mb: float = option(12.0, "request bodies being parsed or scored at once per worker, which bounds "
                                    "its memory: a request beyond gets 503 with Retry-After [MiB]",
                                    env="JOURNEY_MAX_INFLIGHT_MB")
    body_timeout: float = option(30.0, "time a client may take to send a request's body; slower gets 408 "
                                 "[seconds]", env="JOURNEY_BODY_TIMEOUT")
    keep_alive: int = option(75, "idle keep-alive connections are closed after this long; keep it above the "
                             "clients' and proxies' pool idle times (bentoml serve --timeout-keep-alive) [seconds]",
                             env="JOURNEY_KEEP_ALIVE")
    log_request_detail: bool = option(False, "log the messages of refused requests (they name customer ids and "
                                      "values); off: only the route, the status and the problem locations and "
                                      "kinds", env="JOURNEY_LOG_REQUEST_DETAIL")
    host: str = option("127.0.0.1", "address to listen on (bentoml serve --host)", env="BENTOML_HOST")
    port: int = option(3000, "port to listen on (bentoml serve --port)", env="BENTOML_PORT")
    timeout: int | None = option(None, "request timeout (bentoml serve --timeout); none = the service's own, 120 "
                                 "[seconds]", env="BENTOML_TIMEOUT")

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            lowest = 0 if f.name == "max_batch_wait_ms" else 1
            if isinstance(value, int | float) and not isinstance(value, bool) and value < lowest:
                if isinstance(value, float) and value > 0 and f.name != "max_batch_wait_ms":
                    continue  # sizes and times in MiB and seconds may be fractions
                raise ServingConfigError(f"{f.metadata['env']} ({SETTINGS.flag(f.name)}) = {value}: must be >= {lowest}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServingConfig:
        """The config the environment sets (unset or empty variables keep the defaults)."""
        try:
            return cls(**SETTINGS.env_values(os.environ if environ is None else environ))
        except ServingConfigError:
            raise
        except ConfigError as error:
            raise ServingConfigError(str(error)) from error

    def to_env(self) -> dict[str, str]:
        """The environment variables that make :meth:`from_env` return this config."""
        return {f.metadata["env"]: str(getattr(self, f.name)) for f in fields(self) if getattr(self, f.name) is not None}

    def limits(self) -> dict[str, int]:
        """The limits a client must respect (reported by GET /metadata)."""
        return {
            "max_customers_per_request": self.max_customers_per_request,
            "max_events_per_customer": self.max_events_per_customer,
            "max_batch_customers": self.max_batch_customers,
            "state_max_customers": self.state_max_customers,
            "max_body_bytes": self.max_body_bytes,
        }

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 2**20)


SETTINGS = Settings(ServingConfig)
