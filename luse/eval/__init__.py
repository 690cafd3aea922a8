"""Using a trained model: STS scoring (``sts``), retrieval over encoded corpora (``retrieval``) and
similar-sentence generation (``generation``)."""
