"""`duet eval`: run profiles over benchmarks with resumable predictions, then score and report."""
