"""Evaluation harness for the paper's eight benchmarks, on LLaVA's evaluation files.

``trio-vlm eval`` answers a benchmark (resumably, optionally sharded across processes) and scores it with
the official rules; ``trio-vlm table`` turns scored runs into the paper's table. Sub-packages: ``reading``
(question, image and answer files), ``scoring`` (VQA accuracy, answer processing), ``reporting`` (the run
report, the table and plot); ``benches`` holds one definition per benchmark (its files, loader and scorer).
"""
