"""LLaRA's LastFM next-item benchmark: 20 candidates, HitRatio@1, averaged over candidate seeds.

``llarapp benchmark llara-lastfm --data DIR`` runs it. Modules, each importing only those above
it in this list:

* :mod:`~llarapp.benchmark.lastfm.data` — the split (``train_data.jsonl``, ``Val_data.jsonl`` /
  ``Test_data.jsonl``, ``id2name.txt``), the training users' sequences, the candidate draw and
  HitRatio@1 (the protocol).
* :mod:`~llarapp.benchmark.lastfm.scorers` — :class:`SequentialScorer` and the baselines:
  popularity, co-occurrence (raw and cosine), SASRec.
* :mod:`~llarapp.benchmark.lastfm.llara` — the LLaRA++ scorers (``llara++``,
  ``llara++/minilm``).
* :mod:`~llarapp.benchmark.lastfm.run` — the scorer table, :func:`run_lastfm` (the JSON) and
  :func:`format_table`.
"""
