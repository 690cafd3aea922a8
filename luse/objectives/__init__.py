"""Training objectives: how a batch of items becomes texts, and how their embeddings become a loss."""
