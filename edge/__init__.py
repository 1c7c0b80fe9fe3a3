"""Edge deployment of CLEF encoders: ``edge.export`` (workstation side, ``clef export``) and
``edge.runtime`` (device side: numpy + a TFLite interpreter only). See docs/edge.md."""
