"""Evaluation: perplexity, forgetting probes, and the FFN comparison report."""
