"""GLUE with BERT/RoBERTa sequence classifiers and NE in the first self-attention block's input space."""
