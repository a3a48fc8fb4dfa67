"""The oracle control: fresh patients from the phantom simulator, never seen in training.

It is the perfect generator (images from the true data distribution with exact labels),
so its effect is the upper bound of what synthetic data can do on the phantom.
"""

from __future__ import annotations

from pathlib import Path

from benchmark.config import GeneratorConfig
from benchmark.data.config import DataConfig
from benchmark.data.phantom import make_phantom
from benchmark.data.records import EchoData
from generators.base import IMAGE_LABELS, GenerationContext, check_label

# Oracle patients are numbered from here; real phantom datasets stay far below it.
ORACLE_FIRST_PATIENT = 1_000_000


class OracleGenerator:
    trains = False
    samples_real = False  # fresh simulator patients

    def check(self, data: DataConfig, cfg: GeneratorConfig, label: str | None) -> None:
        if data.source != "phantom":
            raise ValueError("mode 'oracle' needs data.source 'phantom' (it samples the simulator)")
        check_label("oracle", label, IMAGE_LABELS)  # phantom patients carry every label

    def train(
        self, ctx: GenerationContext, cfg: GeneratorConfig, out: Path, progress: bool
    ) -> dict:
        return {}

    def sample(
        self,
        model_dir: Path | None,
        ctx: GenerationContext,
        cfg: GeneratorConfig,
        n: int,
        seed: int,
        progress: bool,
    ) -> EchoData:
        self.check(ctx.data, cfg, None)
        n_patients = -(-n // 4)  # four images per phantom patient
        data = make_phantom(
            n_patients,
            ctx.data.size,
            seed=ctx.data.phantom_seed,
            first_patient=ORACLE_FIRST_PATIENT + seed * n_patients,
        ).subset(list(range(n)))
        data.meta["split"] = "train"
        data.meta["source"] = "synthetic"
        return data
