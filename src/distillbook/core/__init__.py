"""The run machinery: parameters, the one training loop, claims and verdicts, results, provenance, the pipeline and the site."""
