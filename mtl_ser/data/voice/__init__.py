"""The voice synthesiser of the built-in corpus (data/corpora/synthetic.py):
speakers.py (speaker traits, emotion styles), synth.py (one utterance)."""
