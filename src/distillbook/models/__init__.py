"""Model factories: small MLPs here; transformers/diffusers classes built from configs in later chapters."""
