"""Benchmarks that print figures: training throughput and inference time (bench_model; the library is
eapnet.bench.throughput), eager vs ExecuTorch latency and peak memory (bench_mobile). Each is a command line; ratios
are measured in one run."""
