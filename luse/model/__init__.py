"""Models and their files: the sentence encoder and its exact fast path, RoFormer-Sim's seq2seq model, the
cross-encoder, distillation students, and the export format (write, read, load for inference)."""
