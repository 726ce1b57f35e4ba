"""``journey synth``: Journey's built-in synthetic retail-bank event log, its labels and its ground truth.

The embedded default dataset: a population of bank customers in five segments (mass, affluent, student,
SME, retired) with heterogeneous behaviours — logins with a weekly and daily rhythm, card payments in
merchant categories with log-normal amounts, monthly salaries (pensions for the retired) on a fixed payday,
a monthly standing order, transfers in and out, fees, complaints, call-centre contacts, product views and
applications, missed payments, default notices, account openings (customers who join during the window)
and account closings (no activity after them). Into it :mod:`~journey_model.data.synth.rules` plants churn,
default and product-uptake outcomes whose causes depend on the order and timing of events across types,
together with decoys that carry the same events in the wrong order or at the wrong time.

The package, bottom to top:

* ``profiles.yaml`` — the numbers: segment profiles, population rates, scenario rates, the item
  vocabularies with their amounts and mixes, hour and weekday rhythms; ``profiles.py`` loads and checks it.
* ``rules.py`` — the planted rules, their decoys, the label horizon, and oracles that evaluate the rules.
* ``draws.py`` (calendar, random helpers, event sink), ``customers.py`` (who the customers are, channels),
  ``scenarios.py`` (planting causes, decoys and outcomes), ``background.py`` (everyday behaviour).
* ``block.py`` — one block simulated and turned into events, labels and ground truth.
* ``writer.py`` (folder, Parquet parts, report) and ``generator.py`` (:func:`generate`, ``SynthConfig``).

Output folder (``generate(out_dir, …)``):

* ``dataset.yaml`` — the :class:`~journey_model.data.schema.DatasetConfig` (``mappings/synth_bank.yaml``).
* ``events/part-00000.parquet`` … — canonical events, one part per ``chunk_customers`` customers, sorted by
  (customer_id, ts); ``event_id`` = ``<customer_id>-<5-digit sequence>`` is unique and stable.
* ``labels.parquet`` — customer_id, cutoff (midnight UTC on the 1st of one of the last five months before
  the window's final month, e.g. 1 July … 1 November for a 2024 window), churn, default, uptake (float 0/1):
  whether ``account_close`` / ``default_notice`` / ``product_application`` happens in
  ``(cutoff, cutoff + 30 days]`` (``rules.HORIZON_DAYS``). Every customer is labelled once; the
  customers are spread evenly over the five cut-offs, so out-of-time splits (train on the early cut-offs,
  test on the last) are possible.
* ``ground_truth.parquet`` — one row per (customer, target) with a planted cause or decoy, or a background
  positive: customer_id, cutoff, target, rule, role (``cause`` / ``decoy`` / ``noise``), label, product
  (the viewed product for uptake rows), event_ids (the events that make up the pattern, all strictly
  before the cut-off; fading logins and missing salaries are absences, so a churn cause lists the
  complaint and the fee, a default cause the last salary, the risky payments and the missed payment).
* ``synth_report.json`` — written last; its presence marks a complete folder.

Determinism: customers are simulated in fixed blocks of ``BLOCK_CUSTOMERS``; block ``b`` draws from
``SeedSequence(seed, spawn_key=(b,))`` and is always simulated whole. So a customer's events depend only on
the seed and the customer's index: the same seed gives identical content for any ``chunk_customers`` (the
part boundaries move, the concatenated rows do not), and a smaller ``customers`` gives a prefix of a larger
run. Memory stays flat whatever the size: one block is simulated at a time and at most ``ROW_GROUP_EVENTS``
events wait to be written.
"""

from journey_model.data.synth import rules
from journey_model.data.synth.block import BLOCK_CUSTOMERS
from journey_model.data.synth.generator import CONFIG_PATH, MAX_MONTHS, MIN_MONTHS, SynthConfig, generate
from journey_model.data.synth.profiles import EVENT_TYPES, PROFILES, SegmentProfile, SynthError, load_profiles
from journey_model.data.synth.writer import DATASET_NAME, SynthReport

__all__ = [
    "BLOCK_CUSTOMERS",
    "CONFIG_PATH",
    "DATASET_NAME",
    "EVENT_TYPES",
    "MAX_MONTHS",
    "MIN_MONTHS",
    "PROFILES",
    "SegmentProfile",
    "SynthConfig",
    "SynthError",
    "SynthReport",
    "generate",
    "load_profiles",
    "rules",
]
