"""Applications on top of the engine: the ``zecon`` command line (``cli``), the benchmark
(``bench``, ``flops``) and tiny random-weight models for tests and offline runs (``tiny``)."""
