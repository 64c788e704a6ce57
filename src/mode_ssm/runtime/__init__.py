"""What training and evaluation both need, importing neither: checkpoint I/O, the data-parallel
context, W&B tracking, loading a trained model, and the one decode function (model outputs ->
search -> per-trial rows).

Submodules are imported by name; this file imports nothing.
"""
