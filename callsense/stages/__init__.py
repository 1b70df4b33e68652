"""The pipeline's stages: transcription, diarization and roles, prosody, text emotion, fusion,
overlaps and hints. Each is a small per-call object typed by the protocols in `base.py`."""
