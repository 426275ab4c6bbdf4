//! Benchmark tooling: the dataset generator (library part, so a smoke test can run it).
