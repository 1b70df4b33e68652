"""The pipeline's stages: transcription, diarization and roles, prosody, text emotion, fusion,
overlaps and hints. Each is a small per-call object with the `Stage` interface (`base.py`)."""
