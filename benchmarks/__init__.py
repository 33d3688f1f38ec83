"""glmkit.benchmarks — glm-bench: speed, memory and quality against the fp16 reference."""
