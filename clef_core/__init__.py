"""clef_core"""
