"""Evaluating frozen or fine-tuned encoders: kNN, linear probe, fine-tune, and the pieces they share."""
