"""Neural network parts of the MODE-SSM decoder: encoder, heads, losses.

Submodules are imported by name (``from mode_ssm.models.ssm import BiMambaEncoder``);
this file imports nothing so that importing the package never fails.
"""
