"""Tokenizers and training-data files: jsonl -> token files -> samples for the trainer."""
