"""MODE-SSM: a mode-aware state-space decoder for intracortical speech BCIs."""

__version__ = "0.1.0"
