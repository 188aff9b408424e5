"""vaultd's benchmark: ``python -m bench.run [--quick] [--out bench/out]`` (see bench/README.md)."""
