"""Corpus adapters by name. Each takes the `corpus` sub-config and returns
a list of Utterance records; adding a corpus is one module plus one line here."""

from mtl_ser.data.corpora import emodb, synthetic
from mtl_ser.data.corpora.base import CorpusError, Utterance


def _synthetic(cfg):
    synthetic.generate(
        cfg.root,
        num_speakers=cfg.num_speakers,
        utterances_per_speaker=cfg.utterances_per_speaker,
    )
    return synthetic.load(cfg.root)


def _emodb(cfg):
    return emodb.load(cfg.root)


CORPORA = {"synthetic": _synthetic, "emodb": _emodb}

# Corpora that are made on demand, so a missing root is not an error.
GENERATED = frozenset({"synthetic"})


def load_corpus(cfg) -> list[Utterance]:
    """Loads the corpus named by `cfg.name` from `cfg.root`."""
    if cfg.name not in CORPORA:
        raise ValueError(
            f"corpus.name={cfg.name!r}: unknown; choose one of {sorted(CORPORA)}"
        )
    return CORPORA[cfg.name](cfg)


__all__ = ["CORPORA", "GENERATED", "CorpusError", "Utterance", "load_corpus"]
