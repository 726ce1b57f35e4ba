"""BentoML's per-request floor on this machine: a service with the Journey service's settings and no model.

One worker on 127.0.0.1 (as ``serving.service.JourneyService`` with ``JOURNEY_WORKERS=1``) and one async
``/predict`` route that takes the same JSON body (``{"customers": [...]}``; the customers are decoded from JSON
but not checked) and answers a constant small JSON. No middleware, no model, no batching: what is left is
uvicorn, BentoML's app (its tracing, metrics and access-log middleware) and the JSON decode of the body, so
customers/s here with one-customer requests bounds what any one-customer /predict can reach on this machine.

    bentoml serve serving_floor:FloorService --working-dir benchmarks --host 127.0.0.1 --port 3000

``benchmarks/bench_serving.py --floor`` starts it and loads it with the same client code as the real service.
"""

from __future__ import annotations

from typing import Any

import bentoml
from pydantic import Field

ANSWER = {"customers": [], "ineligible": {}}  # constant; the size of an empty /predict answer


@bentoml.service(name="journey-floor", workers=1, traffic={"timeout": 120}, http={"host": "127.0.0.1"})
class FloorService:
    """No model: decode the body, answer a constant."""

    @bentoml.api(route="/predict")
    async def predict(self, customers: list[Any] = Field(min_length=1)) -> dict[str, Any]:  # noqa: B008
        return ANSWER
