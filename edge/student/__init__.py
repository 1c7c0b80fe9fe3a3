"""The wearable student on the device side: its export through ``clef export``'s code, and its
TensorFlow Lite Micro budget (arena <= 160 KiB, model <= 256 KiB; docs/edge.md)."""

from edge.student.export import ARENA_BUDGET_KIB, MODEL_BUDGET_KIB, export_student, tflm_arena

__all__ = ["ARENA_BUDGET_KIB", "MODEL_BUDGET_KIB", "export_student", "tflm_arena"]
