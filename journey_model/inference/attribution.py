"""How much each input event pushed each outcome probability: per customer, per outcome, per event.

Three families of method, because none is right for every model and the synthetic ground truth
(``benchmarks/bench_explanations.py``) is what decides which one a user gets by default:

* ``attention`` — the model's own task-query attention (ATRank §3.4, averaged over heads), or the single
  pooling attention of ``gru-attn`` shared by every outcome. ``attention-rollout`` (Abnar & Zuidema 2020)
  also follows the self-attention blocks of ATRank / the Transformer back to the input events: each block's
  head-averaged weights plus the residual (0.5 A + 0.5 I, rows renormalised), multiplied through the blocks and
  read by the task query. Attention says where the model looked; it is never negative and not causal.
* ``integrated-gradients`` (Sundararajan et al. 2017) on the behaviour embeddings: the path from the
  all-zero embedding to the real one, ``n_steps`` midpoint steps, summed over the embedding dimension. Zero is
  the baseline because it is exactly what the model sees at a padded position (``BehaviourEmbedding`` and the
  bag's tables give exact zeros there): "no event here" in the model's own input space. Completeness holds:
  the importances of a customer sum to p(journey) - p(all events blanked) for the recurrent models and the bag;
  ATRank's post-norm LayerNorm makes it nearly blind to the embedding's scale, so there the change sits at
  alpha ~ 0 and the sum falls short (the ranking still matched occlusion's). Written here rather than driven
  through Captum because one forward pass then serves every outcome (one backward per outcome); the unit tests
  check it against Captum's ``IntegratedGradients``.
* ``occlusion`` — leave one event out: the probability drop when the event is removed from the journey
  (the journey re-packed without it, so RNNs, bags and attention all see a journey that never had it), all
  variants of a batch in a few forward passes. TimeSHAP-style pruning (Bento et al., KDD 2021) keeps cost
  bounded: only the ``recent_events`` most recent events are left out one by one; all older ones are removed
  together as one coalition whose drop is shared equally among them.
* ``screened-occlusion`` — occlusion on the events attention rollout points to: per outcome, the
  ``screen_events`` events with the largest rollout weight (their union over the outcomes asked for) are left
  out one by one; every other event gets 0 (not left out, so no measured effect) — unless none of the picked
  events raises any outcome's probability, in which case the customer's other events are left out one by one
  too. At most ``screen_events`` x outcomes forward passes per customer instead of one per event: the default
  for the self-attention family whose task queries read mixed states (Journey's default ATRank), whose planted
  causes rollout ranks high but not first (``benchmarks/bench_explanations.py``).

Sign convention for the signed methods: positive = the event pushes the outcome probability up; importances
are in probability points. Events are ranked by importance, largest first. Arrays are aligned with the model
input events (oldest first, ``lengths[b]`` real events, zero on padding).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from journey_model.data.batch import SequenceBatch
from journey_model.inference.scorer import Scorer
from journey_model.models.atrank import ATRank, ATRankEncoder
from journey_model.models.base import JourneyModel
from journey_model.models.baselines import BagOfEvents, GRUAttentionPooling
from journey_model.models.counts import CountsLinear
from journey_model.models.embedding import BehaviourEmbedding
from journey_model.models.heads import COPY_ATTENTION, NEXT_ITEM_QUERY
from journey_model.models.output import ModelOutput
from journey_model.models.seq2seq import Seq2Seq
from journey_model.models.tasks import Task
from journey_model.models.transformer import Transformer

METHOD_ATTENTION = "attention"
METHOD_ROLLOUT = "attention-rollout"
METHOD_INTEGRATED_GRADIENTS = "integrated-gradients"
METHOD_OCCLUSION = "occlusion"
METHOD_SCREENED_OCCLUSION = "screened-occlusion"
METHODS = (METHOD_ATTENTION, METHOD_ROLLOUT, METHOD_INTEGRATED_GRADIENTS, METHOD_OCCLUSION, METHOD_SCREENED_OCCLUSION)
SIGNED_METHODS = frozenset({METHOD_INTEGRATED_GRADIENTS, METHOD_OCCLUSION, METHOD_SCREENED_OCCLUSION})
POOLED_TASK = "all_tasks"  # the task name of a pooling attention that every task shares

# Chosen by benchmarks/bench_explanations.py (results in benchmarks/results/explanations.json; 150 planted cases
# per outcome, demo models): the model's own task-query attention for the self-attention family when its
# attention reads the events themselves (the one-block reference ATRank; see attention_reads_events), the
# champion type then: precision@3 0.63 / 0.98 / 0.94 on churn / default / uptake, as good as or better than every
# other method, at 1.1-1.4 x a forward pass). Attention over RNN states misses (0.06-0.12 on churn and default),
# so the recurrent family gets leave-one-out occlusion (0.38-0.46 / 0.98-0.99 / 0.95-0.96; integrated gradients
# tie it at up to 4 x the cost), and the bag integrated gradients (exact for its linear read, and cheapest).
# Journey's default ATRank (two pre-norm blocks) mixes events before its task query reads them, so its own
# attention is at random there; it gets screened occlusion (benchmarks/results/explanations_screened.json,
# 2026-12-03: precision@3 0.53 / 0.95 / 0.92, precision@1 1.00 / 0.94 / 0.91 -- the same as full occlusion's
# 0.51 / 0.95 / 0.92 and 1.00 / 0.94 / 0.91 -- at about a fifth of the cost: 24 vs 114 x a forward pass).
DEFAULT_METHOD = METHOD_ATTENTION
FAMILY_DEFAULTS: dict[type, str] = {
    ATRank: METHOD_ATTENTION,
    Transformer: METHOD_ATTENTION,
    Seq2Seq: METHOD_OCCLUSION,
    GRUAttentionPooling: METHOD_OCCLUSION,
    BagOfEvents: METHOD_INTEGRATED_GRADIENTS,
}


class AttributionUnavailableError(ValueError):
    """A method that cannot explain this model (no attention, no embedding, no outcome task)."""


@dataclass
class AttributionConfig:
    """Knobs of the methods; the defaults are the ones the benchmark measured."""

    ig_steps: int = 16  # integrated-gradients path steps (midpoint rule); 16 vs 32 changed precision@3 by < 0.01
    recent_events: int = 100  # occlusion: events left out one by one; older ones form one coalition
    screen_events: int = 16  # screened occlusion: events per outcome (largest rollout weight) left out one by one
    max_rows: int = 2048  # rows (customer x variant or step) per forward pass, bounds memory


@dataclass
class Attributions:
    """Per outcome task, a (B, T) importance per input event, aligned with the model input (oldest first)."""

    method: str
    importance: dict[str, np.ndarray]  # task -> (B, T) float64, 0 on padding
    lengths: np.ndarray  # (B,) real events per customer
    probabilities: dict[str, np.ndarray] = field(default_factory=dict)  # outcome -> (B,) p of the full journey

    @property
    def tasks(self) -> list[str]:
        return list(self.importance)

    def of(self, task: str, row: int) -> np.ndarray:
        """One customer's importances for ``task``: (lengths[row],)."""
        return self.importance[task][row, : int(self.lengths[row])]

    def ranking(self, task: str, row: int) -> np.ndarray:
        """Input positions of one customer, most important first (ties: most recent first)."""
        values = self.of(task, row)
        order = np.lexsort((-np.arange(len(values)), -values))
        return order


# ---------------------------------------------------------------------------------------------- availability


def _model(target: Scorer | JourneyModel) -> JourneyModel:
    return target.model if isinstance(target, Scorer) else target


def embedding_modules(model: JourneyModel) -> list[nn.Module]:
    """The modules whose (B, T, ·) outputs embed each input event: integrated gradients scales these (the bag's
    count tables, and those of a sequence model's ``wide`` path beside its behaviour embedding)."""
    embeddings = [m for m in model.modules() if isinstance(m, BehaviourEmbedding)]
    return embeddings + [table for m in model.modules() if isinstance(m, CountsLinear) for table in m.tables()]


def available_methods(target: Scorer | JourneyModel) -> dict[str, str | None]:
    """Every method, with None where it works for this model and the reason where it does not."""
    model = _model(target)
    if Task.OUTCOME not in model.tasks:
        why = f"model {model.model_name!r} has no outcome task; attributions explain outcome probabilities"
        return dict.fromkeys(METHODS, why)
    attention = None if isinstance(model, ATRank | Transformer | Seq2Seq | GRUAttentionPooling) else (
        f"model {model.model_name!r} has no attention over events; use {METHOD_OCCLUSION!r} or "
        f"{METHOD_INTEGRATED_GRADIENTS!r}")
    rollout = None if isinstance(model, ATRank | Transformer) else (
        f"model {model.model_name!r} has no self-attention blocks to roll out; use {METHOD_ATTENTION!r} or "
        f"{METHOD_OCCLUSION!r}")
    gradients = None if embedding_modules(model) and model.trainable else (
        f"model {model.model_name!r} has no event embedding to integrate gradients over; use {METHOD_OCCLUSION!r}")
    encoder = getattr(model, "encoder", None)  # ATRank's and the Transformer's (the same encoder)
    if gradients is None and isinstance(encoder, ATRankEncoder) and encoder.config.norm_first:
        gradients = (
            f"model {model.model_name!r} ends its pre-norm blocks in a LayerNorm, so scaling every event embedding "
            f"together (the integrated-gradients path) barely moves its output; the rankings it gives are unreliable "
            f"(the planted event first in 0.14 to 0.98 of journeys, by outcome and training); use {METHOD_OCCLUSION!r}")
    return {METHOD_ATTENTION: attention, METHOD_ROLLOUT: rollout, METHOD_INTEGRATED_GRADIENTS: gradients,
            METHOD_OCCLUSION: None, METHOD_SCREENED_OCCLUSION: rollout}


def attention_reads_events(model: JourneyModel) -> bool:
    """True when the task query's attention weights are weights of the input events themselves: ATRank as the
    reference builds it (one block, no time bias between events). In Journey's default ATRank (two pre-norm
    blocks) the states the task query reads already mix many events: on planted journeys
    its weights put the planted complaint first in none where occlusion did in all (tests/unit/test_attribution.py;
    integrated gradients are refused for it, see :func:`available_methods`), so it is explained by occlusion of
    the events its attention rollout ranks highest (screened occlusion)."""
    config = getattr(model, "config", None)
    return not (getattr(config, "num_blocks", 1) > 1 or getattr(config, "relative_time", "none") != "none")


def default_method(target: Scorer | JourneyModel) -> str:
    """The benchmark's winner for this model's family (FAMILY_DEFAULTS; DEFAULT_METHOD for another family)."""
    model = _model(target)
    reasons = available_methods(model)
    usable = [m for m, why in reasons.items() if why is None]
    if not usable:
        raise AttributionUnavailableError(reasons[METHOD_OCCLUSION])  # type: ignore[arg-type]
    preferred = next((m for cls, m in FAMILY_DEFAULTS.items() if isinstance(model, cls)), DEFAULT_METHOD)
    if preferred == METHOD_ATTENTION and not attention_reads_events(model):
        preferred = METHOD_SCREENED_OCCLUSION
    return preferred if preferred in usable else (METHOD_OCCLUSION if METHOD_OCCLUSION in usable else usable[0])


def check_method(target: Scorer | JourneyModel, method: str) -> None:
    """Raise a clear error when ``method`` is unknown or cannot explain this model."""
    if method not in METHODS:
        raise AttributionUnavailableError(f"unknown attribution method {method!r}; expected one of {', '.join(METHODS)}")
    why = available_methods(target)[method]
    if why is not None:
        usable = [m for m, reason in available_methods(target).items() if reason is None]
        raise AttributionUnavailableError(f"{method!r} is unavailable: {why} (available: {', '.join(usable) or 'none'})")


# ---------------------------------------------------------------------------------------------- entry points


def attribute(
    scorer: Scorer,
    examples: list[dict[str, Any]],
    method: str | None = None,
    tasks: Sequence[str] | None = None,
    config: AttributionConfig | None = None,
) -> Attributions:
    """Importances of encoded examples (rows of ``journey prepare`` / ``encode_examples``) by ``method``."""
    batch = scorer.collate(examples)
    attributions, _ = attribute_batch(scorer.model, batch, method, tasks, config)
    return attributions


def attribute_batch(
    model: JourneyModel,
    batch: SequenceBatch,
    method: str | None = None,
    tasks: Sequence[str] | None = None,
    config: AttributionConfig | None = None,
) -> tuple[Attributions, ModelOutput]:
    """Importances for one batch, and the model's plain output on it (the scores a caller reports).

    ``tasks``: outcome names (default every outcome; ``attention`` also explains ``next_event`` /
    ``next_item`` queries and answers ``all_tasks`` for a pooling attention).
    """
    method = method or default_method(model)
    check_method(model, method)
    config = config or AttributionConfig()
    model.eval()
    outcomes = list(model.spec.outcome_names)
    wanted = list(tasks) if tasks is not None else None
    unknown = [t for t in wanted or [] if t not in outcomes and method not in (METHOD_ATTENTION, METHOD_ROLLOUT)]
    if unknown:
        raise AttributionUnavailableError(f"tasks {unknown} are not outcomes of the model ({outcomes})")
    lengths = batch.lengths.numpy().copy()
    if method in (METHOD_ATTENTION, METHOD_ROLLOUT):
        with torch.no_grad():
            output = model(batch, output_attentions=True)
        per_task = attention_importance(output, batch.mask, rollout=method == METHOD_ROLLOUT)
        if wanted is not None:
            per_task = {t: w for t, w in per_task.items() if t in wanted or t == POOLED_TASK}
    else:
        screened = method == METHOD_SCREENED_OCCLUSION
        with torch.no_grad():
            output = model(batch, output_attentions=screened)
        chosen = wanted or outcomes
        columns = [outcomes.index(t) for t in chosen]
        if method == METHOD_INTEGRATED_GRADIENTS:
            values = integrated_gradients(model, batch, columns, config.ig_steps, config.max_rows)
        else:
            values = (screened_occlusion(model, batch, chosen, columns, output, config) if screened else
                      occlusion(model, batch, columns, output, config.recent_events, config.max_rows))
        per_task = {t: values[:, :, j] for j, t in enumerate(chosen)}
    probabilities = {}
    if output.outcome_logits is not None:
        p = torch.sigmoid(output.outcome_logits.float()).numpy()
        probabilities = {name: p[:, j].astype(np.float64) for j, name in enumerate(outcomes)}
    importance = {t: np.where(batch.mask.numpy(), w.astype(np.float64), 0.0) for t, w in per_task.items()}
    return Attributions(method, importance, lengths, probabilities), output


# ---------------------------------------------------------------------------------------------- attention


def attention_importance(output: ModelOutput, mask: torch.Tensor, rollout: bool = False) -> dict[str, np.ndarray]:
    """{task: (B, T)} from a forward pass with ``output_attentions=True``: task queries (head mean) or the pool.

    ``rollout`` carries each task query back through the self-attention blocks ``self/block<i>``.
    """
    per_task = {
        name[len("task/"):]: weights.float().mean(dim=1)  # (B, heads, T) -> (B, T)
        for name, weights in output.attentions.items()
        if name.startswith("task/")
    }
    if not per_task and "pool" in output.attentions:
        per_task = {POOLED_TASK: output.attentions["pool"].float()}
    if COPY_ATTENTION in output.attentions:
        # next items copied from the journey: the copied share goes to the behaviours copied from, the rest by the
        # query's (or the pool's) attention — g · attention + (1 − g) · pointer, a distribution over behaviours
        copied = output.attentions[COPY_ATTENTION].float()  # (B, T), sums to 1 − g
        read = per_task.get(NEXT_ITEM_QUERY, per_task.get(POOLED_TASK))
        if read is not None:
            per_task[NEXT_ITEM_QUERY] = (1.0 - copied.sum(-1, keepdim=True)) * read + copied
    if rollout:
        flow = attention_rollout(output, mask)  # (B, T, T)
        per_task = {task: torch.einsum("bq,bqk->bk", w, flow) for task, w in per_task.items()}
    return {task: w.numpy() for task, w in per_task.items()}


def attention_rollout(output: ModelOutput, mask: torch.Tensor) -> torch.Tensor:
    """(B, T, T): how much of each encoded state (row) comes from each input event (column), Abnar & Zuidema.

    Per block: head-averaged weights, plus the identity for the residual connection on real positions, rows
    renormalised; blocks multiplied from the first to the last. Padded rows and columns stay zero.
    """
    blocks = sorted((name for name in output.attentions if name.startswith("self/block")),
                    key=lambda name: int(name[len("self/block"):]))
    B, T = mask.shape
    real = mask.float()
    identity = torch.diag_embed(real)  # (B, T, T) identity on real positions only
    flow = identity.clone()
    for name in blocks:
        weights = output.attentions[name].float().mean(dim=1)  # (B, T, T)
        mixed = 0.5 * weights + 0.5 * identity
        mixed = mixed / mixed.sum(-1, keepdim=True).clamp(min=1e-12)
        flow = mixed @ flow
    return flow * real[:, :, None] * real[:, None, :]


def screened_occlusion(model: JourneyModel, batch: SequenceBatch, tasks: Sequence[str], columns: list[int],
                       output: ModelOutput, config: AttributionConfig) -> np.ndarray:
    """(B, T, n_tasks) occlusion drops of the events :func:`screen` picks, 0 for the others. A customer none of
    whose picked events raises any outcome's probability (rollout said little, e.g. a barely trained model)
    has the rest of its events left out one by one too, so that it gets reasons wherever occlusion gives some."""
    candidates = screen(output, batch.mask, tasks, config.screen_events)
    values = occlusion(model, batch, columns, output, config.recent_events, config.max_rows, candidates)
    silent = torch.from_numpy(~(values > 0).any(axis=(1, 2))) & (batch.mask & ~candidates).any(dim=1)
    if silent.any():
        rest = (batch.mask & ~candidates) & silent[:, None]
        values += occlusion(model, batch, columns, output, config.recent_events, config.max_rows, rest)
    return values


def screen(output: ModelOutput, mask: torch.Tensor, tasks: Sequence[str], per_task: int) -> torch.Tensor:
    """(B, T) bool: per row, the union over ``tasks`` of the ``per_task`` real events with the largest rollout
    weight (a model whose task queries are shared screens with the shared one)."""
    rollout = attention_importance(output, mask, rollout=True)
    weights = [rollout[t] for t in tasks if t in rollout] or list(rollout.values())
    B, T = mask.shape
    chosen = torch.zeros(B, T, dtype=torch.bool)
    k = min(per_task, T)
    for w in weights:
        scores = torch.from_numpy(w).masked_fill(~mask, float("-inf"))
        top = scores.topk(k, dim=1).indices
        chosen.scatter_(1, top, True)
    return chosen & mask


# ---------------------------------------------------------------------------------------------- batch surgery


def select_rows(batch: SequenceBatch, rows: torch.Tensor, keep: torch.Tensor | None = None) -> SequenceBatch:
    """Rows ``rows`` of ``batch``; with ``keep`` (len(rows), T) bool, only those events, re-packed oldest first.

    Removing an event this way gives the journey that never had it: later events move up, the length drops,
    so RNNs (which read ``lengths``), bags (which count ``mask``) and attention all see the same thing.
    """
    mask = batch.mask[rows]
    if keep is None:
        order = None
        new_mask = mask
        lengths = batch.lengths[rows]
    else:
        kept = keep & mask
        lengths = kept.sum(1)
        order = torch.argsort((~kept).to(torch.int8), dim=1, stable=True)  # kept events first, in their order
        new_mask = torch.arange(mask.shape[1])[None, :] < lengths[:, None]

    def pick(tensor: torch.Tensor) -> torch.Tensor:
        taken = tensor[rows]
        if order is None:
            return taken
        index = order if taken.dim() == 2 else order[..., None].expand_as(taken)
        moved = taken.gather(1, index)
        shape = new_mask if taken.dim() == 2 else new_mask[..., None]
        return moved * shape.to(moved.dtype)

    row_list = rows.tolist()
    return replace(
        batch,
        event_type=pick(batch.event_type),
        time_bucket=pick(batch.time_bucket),
        time_gap=None if batch.time_gap is None else pick(batch.time_gap),
        categorical={name: pick(ids) for name, ids in batch.categorical.items()},
        numeric=pick(batch.numeric),
        numeric_mask=pick(batch.numeric_mask),
        mask=new_mask,
        lengths=lengths,
        outcomes=None if batch.outcomes is None else batch.outcomes[rows],
        next_event_type=None if batch.next_event_type is None else batch.next_event_type[rows],
        next_item=None if batch.next_item is None else batch.next_item[rows],
        forecast=None if batch.forecast is None else batch.forecast[rows],
        customer_id=[batch.customer_id[i] for i in row_list] if batch.customer_id else [],
        event_id=None,
    )


def _outcome_probabilities(model: JourneyModel, batch: SequenceBatch, columns: list[int]) -> torch.Tensor:
    output = model(batch)
    return torch.sigmoid(output.outcome_logits.float()[:, columns])  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------------- occlusion


def occlusion(
    model: JourneyModel,
    batch: SequenceBatch,
    columns: list[int],
    output: ModelOutput,
    recent_events: int,
    max_rows: int,
    candidates: torch.Tensor | None = None,
) -> np.ndarray:
    """(B, T, n_tasks) probability drop when each event (or the old-event coalition) is removed.

    ``candidates`` (B, T) bool: leave out only these events, one by one, and no coalition (the others keep 0).
    """
    B, T = batch.mask.shape
    lengths = batch.lengths.tolist()
    rows, keeps, targets = [], [], []  # per variant: source row, kept events, positions it removes
    positions = torch.arange(T)
    for b, n in enumerate(lengths):
        if candidates is not None:
            for p in candidates[b].nonzero().flatten().tolist():
                rows.append(b)
                keeps.append(positions != p)
                targets.append((b, p, p + 1))
            continue
        start = max(0, n - recent_events)
        if start > 0:
            rows.append(b)
            keeps.append(positions >= start)
            targets.append((b, 0, start))
        for p in range(start, n):
            rows.append(b)
            keeps.append(positions != p)
            targets.append((b, p, p + 1))
    base = torch.sigmoid(output.outcome_logits.float()[:, columns])  # type: ignore[union-attr]
    result = np.zeros((B, T, len(columns)), dtype=np.float64)
    if not rows:
        return result
    row_index = torch.tensor(rows)
    keep = torch.stack(keeps)
    drops = []
    with torch.no_grad():
        for start in range(0, len(rows), max_rows):
            part = slice(start, start + max_rows)
            variant = select_rows(batch, row_index[part], keep[part])
            drops.append(base[row_index[part]] - _outcome_probabilities(model, variant, columns))
    drop = torch.cat(drops).numpy()
    for (b, low, high), value in zip(targets, drop, strict=True):
        result[b, low:high] = value / (high - low)  # a coalition's drop shared equally by its events
    return result


# ---------------------------------------------------------------------------------------------- integrated gradients


class _ScaledEmbeddings:
    """Forward hooks that scale the event embeddings by one alpha per row and keep them for the gradient."""

    def __init__(self, modules: list[nn.Module]):
        self.modules = modules
        self.alphas: torch.Tensor | None = None
        self.full: list[torch.Tensor] = []  # the unscaled embeddings (x - baseline, baseline = 0)
        self.scaled: list[torch.Tensor] = []  # what the model read, requires grad
        self.handles = [m.register_forward_hook(self._hook) for m in modules]

    def _hook(self, module: nn.Module, inputs: Any, output: torch.Tensor) -> torch.Tensor:
        full = output.detach()
        scaled = (full * self.alphas.view(-1, *([1] * (full.dim() - 1)))).requires_grad_()  # type: ignore[union-attr]
        self.full.append(full)
        self.scaled.append(scaled)
        return scaled

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def integrated_gradients(
    model: JourneyModel, batch: SequenceBatch, columns: list[int], steps: int, max_rows: int
) -> np.ndarray:
    """(B, T, n_tasks) integrated gradients of each outcome probability, summed over the embedding dim.

    Midpoint rule on alpha = (k + 0.5) / steps; the baseline is the zero embedding (= padding).
    """
    B, T = batch.mask.shape
    result = np.zeros((B, T, len(columns)), dtype=np.float64)
    customers_per_pass = max(1, max_rows // steps)
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps
    hooks = _ScaledEmbeddings(embedding_modules(model))
    try:
        for start in range(0, B, customers_per_pass):
            chunk = torch.arange(start, min(B, start + customers_per_pass))
            n = len(chunk)
            rows = chunk.repeat(steps)  # step-major: rows [k * n + i] = customer i at alpha k
            hooks.alphas = alphas.repeat_interleave(n)
            hooks.full, hooks.scaled = [], []
            with torch.enable_grad():
                p = _outcome_probabilities(model, select_rows(batch, rows), columns)  # (n * steps, tasks)
                for j in range(len(columns)):
                    grads = torch.autograd.grad(p[:, j].sum(), hooks.scaled, retain_graph=j < len(columns) - 1,
                                                allow_unused=True)
                    total = torch.zeros(n, T)
                    for full, grad in zip(hooks.full, grads, strict=True):
                        if grad is None:
                            continue
                        per_event = (full * grad).sum(-1).view(steps, n, T).mean(0)  # (n, T)
                        total += per_event
                    result[start:start + n, :, j] = total.numpy()
    finally:
        hooks.remove()
    return result
