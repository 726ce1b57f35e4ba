"""Journey's online API: the BentoML service (:mod:`serving.service`) and its request models, checks and batching."""
