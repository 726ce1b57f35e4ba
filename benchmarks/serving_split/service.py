"""Benchmark variant (not the product): BentoML's own adaptive batching behind a validating front service.

``Front`` (what clients call) checks every /predict request on its own with serving's
:class:`~serving.service.JourneyScoring` — the same bulk checks and the same 4xx answers as
``serving.service.JourneyService`` — and only a valid request's customers go on to ``Model``, a second
BentoML service reached through ``bentoml.depends``, whose ``score`` API is
``@bentoml.api(batchable=True, batch_dim=0)``: BentoML merges the customer lists of concurrent calls into one
list (up to ``max_batch_size`` customers, waiting at most ``max_latency_ms``), which ``Model`` parses and
scores in one forward pass with ``JourneyScoring.score``. Because only validated requests reach the merged
pass, a bad request cannot fail its neighbours; if a merged pass fails anyway (a bug), each customer is
scored alone so the failure stays with its own request.

Costs this design adds over the in-process :class:`~serving.batching.AdaptiveBatcher`: a second HTTP hop
(JSON out and back) per request, and the customers parsed twice (front: checks; model: canonical events,
since Arrow tables do not cross the hop). ``benchmarks/bench_serving.py --service split`` measures it.

    JOURNEY_MODEL_URI=<bundle> PYTHONPATH=<repo> bentoml serve service:Front --working-dir benchmarks/serving_split
"""

from __future__ import annotations

import os
from typing import Any

import bentoml
from pydantic import Field
from starlette.responses import JSONResponse

with bentoml.importing():
    from serving.bulk import BulkRequest, PredictCustomers, validate_customers
    from serving.config import ServingConfig
    from serving.requests import RequestError
    from serving.schemas import CustomerScore, ErrorResponse, PredictResponse, count_ineligible_answers
    from serving.service import JourneyScoring

MAX_BATCH = int(os.environ.get("SPLIT_MAX_BATCH", "64"))  # customers per merged pass
MAX_LATENCY_MS = int(os.environ.get("SPLIT_MAX_LATENCY_MS", "1000"))  # BentoML refuses (503 "process is overloaded") calls it expects to wait longer


# runner_connection: BentoML's client of this service (in Front) closes its whole aiohttp session after
# max_requests calls (default 100) while other calls are still in flight on it, which failed 5-20 % of requests
# at 8-64 clients ("Server disconnected", "Connector is closed"); a session that is never recycled avoids it.
@bentoml.service(name="journey-split-model", workers=1, traffic={"timeout": 120},
                 runner_connection={"max_requests": 1_000_000_000, "max_age": 1e9})
class Model:
    """Scores already-validated customers; BentoML batches concurrent calls."""

    def __init__(self) -> None:
        self.scoring = JourneyScoring(ServingConfig.from_env())
        self.scoring.warm_up()
        self.passes = self.customers = 0

    @bentoml.api(batchable=True, batch_dim=0, max_batch_size=MAX_BATCH, max_latency_ms=MAX_LATENCY_MS)
    def score(self, customers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        self.passes += 1
        self.customers += len(customers)
        try:
            return self._score(customers)
        except Exception:  # a bug: keep the failure with the customer that caused it
            answers = []
            for customer in customers:
                try:
                    answers += self._score([customer])
                except Exception as error:  # noqa: BLE001 - reported to that request alone
                    answers.append({"error": f"{type(error).__name__}: {error}"})
            return answers

    def _score(self, customers: list[dict[str, Any]]) -> list[dict[str, Any]]:
        parsed = self.scoring.parse(validate_customers(customers))
        return [answer.model_dump(mode="json") for answer in self.scoring.score([parsed])[0]]

    @bentoml.api
    def stats(self) -> dict[str, int]:
        return {"passes": self.passes, "customers": self.customers}


@bentoml.service(name="journey-split", workers=1, traffic={"timeout": 120}, http={"host": "127.0.0.1"})
class Front:
    """Checks each request on its own (same 4xx as the product), then hands valid customers to ``Model``."""

    model = bentoml.depends(Model)

    def __init__(self) -> None:
        self.scoring = JourneyScoring(ServingConfig.from_env())  # for the checks (parse) only

    @bentoml.api(route="/predict")
    async def predict(self, customers: PredictCustomers = Field(min_length=1)) -> PredictResponse:  # noqa: B008
        try:
            self.scoring.parse(customers)
        except RequestError as error:
            return JSONResponse(ErrorResponse(**error.body()).model_dump(), status_code=error.status)  # type: ignore[return-value]
        sent = customers.sent if isinstance(customers, BulkRequest) else [c.model_dump(mode="json") for c in customers]
        answers = await self.model.to_async.score(sent)
        failed = [a["error"] for a in answers if "error" in a]
        if failed:
            raise RuntimeError("; ".join(failed))
        scores = [CustomerScore.model_validate(a) for a in answers]
        return PredictResponse(customers=scores, ineligible=count_ineligible_answers(scores))

    @bentoml.api(route="/metadata_batching")
    async def batching(self) -> dict[str, int]:
        return await self.model.to_async.stats()

