"""Corpus readers, built-in data sets, tokenizers and the tf.data pipeline."""
