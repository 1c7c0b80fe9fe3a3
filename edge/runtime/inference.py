"""Model + ``preprocess.json`` -> one result per 10 s window of a single-lead signal or stream."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .model import EdgeModel, ModelError
from .spec import PreprocessSpec, load_spec
from .stream import iter_windows, windows_of

PREPROCESS_FILE = "preprocess.json"


class EdgePipeline:
    """``EdgePipeline("export/model_int8.tflite")`` reads ``export/preprocess.json`` beside it."""

    def __init__(self, model_path: str | Path, *, spec: PreprocessSpec | str | Path | None = None,
                 runtime: str | None = None, num_threads: int = 1) -> None:
        model_path = Path(model_path)
        if not isinstance(spec, PreprocessSpec):
            spec = load_spec(spec or model_path.parent / PREPROCESS_FILE)
        self.spec = spec
        self.model = EdgeModel(model_path, runtime=runtime, num_threads=num_threads)
        if self.model.input_samples != spec.window_samples:
            raise ModelError(f"{model_path}: takes {self.model.input_samples} samples but preprocess.json "
                             f"describes {spec.window_samples}")

    def result(self, start_s: float, x: np.ndarray | None, skipped: str | None = None,
               lead: str | None = None) -> dict[str, Any]:
        """The JSON-ready record of one window: ``lead``, ``start_s``, ``embedding`` and, when the
        model carries task heads, ``predictions`` ({head: {label: value}}); or ``skipped``."""
        out: dict[str, Any] = {"lead": lead} if lead is not None else {}
        out["start_s"] = round(float(start_s), 6)
        if x is None:
            out["skipped"] = skipped
            return out
        emb = self.model.embed(x)
        out["embedding"] = [round(float(v), 6) for v in emb]
        heads = self.heads_for(lead)
        if heads:
            scores = {name: head(emb.astype(np.float64)) for name, head in heads.items()}
            out["predictions"] = {name: {label: round(float(p), 6) for label, p in zip(heads[name].labels, s)}
                                  for name, s in scores.items()}
            decisions = {name: d for name, s in scores.items() if (d := heads[name].decisions(s))}
            if decisions:
                out["decisions"] = decisions
        return out

    def heads_for(self, lead: str | None) -> dict[str, Any]:
        """The heads that run on windows of ``lead``: a head fitted on one lead runs on that lead only."""
        return {name: h for name, h in self.spec.heads.items() if h.applies_to(lead)}

    def describe_heads(self, lead: str | None) -> list[str]:
        """Console lines: each head that runs on ``lead`` and what its output means; the heads left out."""
        lines = [h.describe(name) for name, h in self.heads_for(lead).items()]
        other = [f"{name} (lead {h.lead})" for name, h in self.spec.heads.items() if not h.applies_to(lead)]
        if other:
            lines.append(f"not run on lead {lead}: {', '.join(other)}")
        return lines

    def run_stream(self, chunks: Iterable[np.ndarray], fs: float, lead: str | None = None) -> Iterator[dict[str, Any]]:
        for w in iter_windows(chunks, fs, self.spec):
            yield self.result(w.start_s, w.x, w.skipped, lead)

    def run(self, signal: np.ndarray, fs: float, lead: str | None = None) -> Iterator[dict[str, Any]]:
        for w in windows_of(signal, fs, self.spec):
            yield self.result(w.start_s, w.x, w.skipped, lead)
