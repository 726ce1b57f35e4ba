"""The analysts' dashboard (`journey dashboard`): a Streamlit app over batch-scoring output, the events and the
MLflow registry of a working directory (what `journey demo` writes).

``config`` (the command's typed options), ``data`` (DuckDB / pyarrow queries over the Parquet: the portfolio, one
customer, segments), ``models`` (the registry: champion, candidates, metrics, plots, lineage), ``explaining``
(a customer's per-event importance from the model that scored it), ``stability`` (the monitoring report),
``charts`` (Altair figures), ``launch`` (the streamlit command) and ``app`` (the Streamlit script).
The layer sits between ``pipelines`` (which starts it) and ``serving`` / ``journey_model.tracking``; nothing
below imports it.
"""
