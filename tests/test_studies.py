"""The study registry (probekit.runner.studies): one registration per study section of the config."""
from __future__ import annotations

import pytest

from probekit.config import STUDY_SECTIONS, ExperimentConfig
from probekit.errors import ConfigError
from probekit.runner.studies import STUDIES, present


def test_one_registration_per_study_section():
    assert tuple(s.section for s in STUDIES) == STUDY_SECTIONS


def test_present_parses_every_section_up_front():
    cfg = ExperimentConfig(tasks=["upos", "aux_verb"], structural={"epochs": 1}, neurons={})
    assert [(s.section, type(st).__name__) for s, st in present(cfg)] == [("structural", "StructuralConfig"),
                                                                         ("neurons", "NeuronsConfig")]
    assert present(ExperimentConfig()) == []
    with pytest.raises(ConfigError, match="upos"):  # scalar_mix's task check is part of its settings
        present(ExperimentConfig(tasks=["upos"], scalar_mix={"metric": "pos_f1"}))
    with pytest.raises(ConfigError, match="Unknown neurons setting"):
        present(ExperimentConfig(neurons={"k": 3}))
