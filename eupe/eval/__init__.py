"""Evaluation protocols of the paper on frozen backbones (one module or subpackage per protocol)."""
