"""Reference parity harness (issue 14): tiny random-weight instances of the real model classes, run
through the authors' own pipelines on our noise (tools/reference/rng.py), for comparison with our
exporter and worker. One module per family exposes `prepare(out_dir, repo, log=print)`."""
