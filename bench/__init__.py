"""Benchmarks: each script prints a Markdown table and writes JSON under bench/results/.

Run one from the repository root as `.venv/bin/python bench/<name>.py` or
`.venv/bin/python -m bench.<name>`. Shared helpers: `_report` (tables, JSON, the machine's load),
`_shape_data` (the benchmark rows: SH3D test, pool test per source, cross-source; through
gmm_perception.data.held_out; threads, timing, figures)
and `em_baseline` (scikit-learn EM, the classic baseline of the shape-model and upsampling
benchmarks).
"""
