"""Test and demo data: synthetic scenes with known motion and masks, and the embedded sample dataset
(`python -m pipeline sample`)."""
