"""Benchmarks for `duet eval`: loaders for local copies, official metrics, and the offline `synth` set."""
