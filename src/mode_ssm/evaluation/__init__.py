"""Evaluation: decoding a split with a trained model (:mod:`.pipeline`), test-time adaptation
(:mod:`.tta`), reports (:mod:`.reports`), the evaluate job (:mod:`.evaluate`), decoder tuning
(:mod:`.tuning`) and competition submissions (:mod:`.submission`).

Submodules are imported by name; this file imports nothing. Nothing here imports
:mod:`mode_ssm.training`.
"""
