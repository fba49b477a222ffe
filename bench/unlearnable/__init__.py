"""Unlearnable examples: training-time data protection (bench.unlearnable.methods) and the training-time
countermeasures a data user applies (bench.unlearnable.countermeasures). The protocol that scores them is
bench.protocols.unlearnable ("train-on-data")."""
