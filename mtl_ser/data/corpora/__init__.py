"""Corpus adapters by name. Each takes the `corpus` sub-config and returns
a list of Utterance records; adding a corpus is one module plus one line here.

Utterances an adapter leaves out on purpose (IEMOCAP labels outside the class
map, RAVDESS songs) are counted on stdout, never lost silently.
"""

import collections

from mtl_ser.data.corpora import cremad, emodb, iemocap, manifest, ravdess, synthetic
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


def _iemocap(cfg):
    utterances, dropped = iemocap.load_with_summary(
        cfg.root, classes=cfg.iemocap_classes, kind=cfg.iemocap_kind
    )
    _report_left_out("IEMOCAP", dropped, "corpus.iemocap_classes")
    return utterances


def _ravdess(cfg):
    dropped = collections.Counter()
    utterances = ravdess.load(cfg.root, include_song=cfg.include_song, dropped=dropped)
    _report_left_out("RAVDESS", dropped, "corpus.include_song")
    return utterances


def _cremad(cfg):
    return cremad.load(cfg.root)


def _manifest(cfg):
    return manifest.load(cfg.root)


def _report_left_out(corpus: str, counts: collections.Counter, field: str):
    if counts:
        listing = ", ".join(f"{k} {n}" for k, n in sorted(counts.items()))
        total = sum(counts.values())
        print(f"{corpus}: left out {total} utterances ({listing}); see {field}")


CORPORA = {
    "synthetic": _synthetic,
    "emodb": _emodb,
    "iemocap": _iemocap,
    "ravdess": _ravdess,
    "cremad": _cremad,
    "manifest": _manifest,
}

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
