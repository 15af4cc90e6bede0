"""Unlearning methods; see :mod:`app.unlearning.methods.registry` for the mapping."""
