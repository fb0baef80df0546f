"""Test helpers: paths, gloo spawning, synthetic data, naive references and the golden-vector checkers."""
