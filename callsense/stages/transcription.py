"""Streaming speech recognition with faster-whisper, one `StreamingTranscriber` per speaker stream.

Policy: Silero VAD cuts the stream into utterances. While a person speaks, the utterance so far is
re-decoded every `partial_interval_s` (with a short encoder window: cheap, a little less accurate)
and the words two consecutive hypotheses agree on are the stable prefix (LocalAgreement-2). When the
VAD hears the end of the utterance (or it grows past `max_utterance_s`, cut at its last sentence or
clause end), the whole utterance is decoded once more with word timestamps and emitted as final. Finals
are therefore decoded exactly as offline Whisper would decode that utterance, which keeps streaming
WER at the offline level.

Latency: the end of an utterance is only certain after `min_silence_s` of silence, so the final
decode starts speculatively after `speculate_after_s` on exactly the audio the final will have; if
the silence lasts, the final is ready when it is declared, if speech resumes the result is shown as
a partial. All decodes of a process pass one `DecodeGate` (`stages.whisper`): finals queue, go first
and are decoded in batches with other calls' finals; partials and speculative decodes only run on
spare capacity and are skipped otherwise (never queued).

Recordings (`pack=True`, the `recording` call profile: transcribe, analyze, audit) do not pay a
30 s encoder pass per turn: a speaker's turns are packed into shared windows (`stages.packing`) and
each word goes back to its turn, so the events are those of the live path. Live finals may be
decoded again in the background (`stages.revision`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from callsense.audio.vad import FRAME, Endpointer, SileroVAD
from callsense.config import SAMPLE_RATE, AsrSettings
from callsense.events import Role, TranscriptFinal, TranscriptPartial, Word
from callsense.stages.base import TranscriberState
from callsense.stages.packing import Pack
from callsense.stages.revision import Reviser
from callsense.stages.whisper import Hypothesis, Mode, WhisperDecoder, norm_word

Vote = tuple[str, float]  # a language and its probability
MIN_CUT_SHARE = 1 / 3  # a long turn's first final keeps at least this share of max_utterance_s
SENTENCE_END, CLAUSE_END = tuple(".?!…"), tuple(",;:—")
EARLY_VOTE_S = 1.5  # an utterance's language vote is taken on its first 1.5 s
MIN_VOTE_SPEECH_S = 0.6  # shorter turns (one-word prompts) do not vote on the speaker's language


@dataclass
class Utterance:
    start_sample: int
    audio: list[np.ndarray] = field(default_factory=list)
    samples: int = 0
    last_partial_at: int = 0
    voted: bool = False  # this utterance's early language vote was taken
    previous_words: list[str] = field(default_factory=list)
    # a speculative final: samples decoded, result, and the language vote it was decoded with
    speculative: tuple[int, Hypothesis, Vote | None] | None = None

    def add(self, audio: np.ndarray) -> None:
        self.audio.append(audio)
        self.samples += audio.size

    def array(self) -> np.ndarray:
        if len(self.audio) > 1:
            self.audio = [np.concatenate(self.audio)]
        return self.audio[0] if self.audio else np.zeros(0, np.float32)


def agreed_prefix(previous: list[str], current: list[str]) -> int:
    """Number of leading words two hypotheses agree on (case and punctuation ignored)."""
    n = 0
    for a, b in zip(previous, current, strict=False):
        if norm_word(a) != norm_word(b):
            break
        n += 1
    return n


class StreamingTranscriber:
    """Feeds one speaker stream; `push` returns partial and final transcript events as they are ready
    (the `stages.base.Transcriber` protocol)."""

    def __init__(
        self,
        decoder: WhisperDecoder,
        settings: AsrSettings,
        speaker: str,
        role: Role = "unknown",
        language: str | None = None,
        vad: SileroVAD | None = None,
        pack: bool = False,
        reviser: Reviser | None = None,
        channel: int = 0,
        on_speculation: Callable[[str], None] | None = None,
    ) -> None:
        """`pack`: a recording, not a live call: finals are decoded in packs (see `Pack`). `reviser`:
        decodes a live speaker's finals again in packs. `channel`: the call's channel this stream is
        (on its events). `on_speculation` is called with a speculative final's text: later stages may
        start on it during the pause."""
        self.decoder, self.settings = decoder, settings
        self.speaker, self.role, self.channel = speaker, role, channel
        self.language = language or settings.language
        self._language_votes: list[tuple[str, float]] = []
        self.vad = vad or SileroVAD()
        self.endpointer = Endpointer(settings.vad_threshold, settings.min_silence_s, pad_s=settings.speech_pad_s)
        self._history = np.zeros(0, np.float32)  # recent audio, for the padded utterance start
        self._samples = 0  # samples received
        self._utt: Utterance | None = None
        self._count = 0
        self._said: deque[str] = deque(maxlen=8)  # this speaker's last finals: the next final's prompt
        self._partials = True
        self.pack = Pack(settings.pack_s) if pack else None
        self.reviser = reviser if not pack else None
        self.heard_until = 0.0  # stream time where the last utterance (of at least 0.2 s) ended
        self.on_speculation = on_speculation

    def set_partials(self, on: bool) -> None:
        """Partials on or off (off: recordings, and live calls shedding load while behind)."""
        self._partials = on

    def push(self, audio: np.ndarray) -> list[TranscriptPartial | TranscriptFinal]:
        audio = np.asarray(audio, np.float32)
        events: list[TranscriptPartial | TranscriptFinal] = []
        base = self._samples
        self._samples += audio.size
        self._history = np.concatenate([self._history, audio])[-SAMPLE_RATE:]
        boundaries = self.endpointer.update(self.vad(audio))
        cursor = 0  # position in `audio` up to which the current utterance has been fed
        for b in boundaries:
            local = int(np.clip(b.sample - base, 0, audio.size))
            if b.kind == "start" and self._utt is None:
                self._utt = Utterance(start_sample=b.sample)
                # audio between the padded start and this chunk comes from the history buffer
                lead = base - b.sample
                if lead > 0:
                    self._utt.add(self._history[-(audio.size + lead) : -audio.size or None][:lead])
                cursor = local
            elif b.kind == "end" and self._utt is not None:
                self._utt.add(audio[cursor:local])
                cursor = local
                events.extend(self._finalize(end_sample=b.sample))
        if self._utt is not None:
            self._utt.add(audio[cursor:])
            events.extend(self._maybe_partial_or_cut())
        if self._utt is not None and self.settings.speculate_after_s > 0 and self.pack is None:
            events.extend(self._speculate())
        if self.pack is not None and self.pack.stale(self._samples):
            events.extend(self._decode_pack())
        if self.reviser is not None:
            events.extend(self._revision(*r) for r in self.reviser.tick(self._samples))
        return events

    @property
    def utterances(self) -> int:
        return self._count

    def state(self) -> TranscriberState:
        """What a worker taking this stream over needs to go on as this one would: where the stream
        is, the VAD's state, the speaker's language (votes so far, or locked) and what they said (the
        next prompt). Only taken while nobody speaks."""
        said = list(self._said) if self.settings.prompt_chars > 0 else []  # words travel only when used
        decoding = {"language": self.language, "votes": list(self._language_votes), "said": said}
        return TranscriberState(self._samples, self._count, self.vad.state(), decoding)

    def restore(self, state: TranscriberState) -> None:
        """Continue a stream another worker heard up to `state.sample` (nobody speaking there): ids
        and times go on from there. With its VAD state the speech is cut into the same utterances
        as it would have been without the change, and with its decoding state each utterance is
        decoded in the same language, with the same prompt."""
        self._samples, self._count, self._utt = state.sample, state.utterances, None
        if state.vad is not None:
            self.vad.restore(state.vad)
        self.endpointer.seek((state.sample - self.vad.pending) // FRAME)
        decoding = state.decoding or {}
        language = decoding.get("language")
        self.language = language if isinstance(language, str) else self.language
        self._language_votes = [(str(lg), float(p)) for lg, p in decoding.get("votes", [])]
        self._said.extend(str(t) for t in decoding.get("said", []))

    @property
    def speaking(self) -> bool:
        """Someone is talking on this stream now (an utterance is open)."""
        return self._utt is not None

    def flush(self) -> list[TranscriptPartial | TranscriptFinal]:
        """End of stream: whatever is being said is final now."""
        events: list[TranscriptPartial | TranscriptFinal] = []
        events += self._finalize() if self._utt is not None and self._utt.samples > 0 else []
        return events + self._decode_pack()

    def end_revisions(self) -> None:
        """After `flush`: the speaker's last pack is queued for revision."""
        if self.reviser is not None:
            self.reviser.end()

    def revise_rest(self, deadline: float | None) -> list[TranscriptFinal]:
        """After `end_revisions`: the revisions still to come, waited for until `deadline`."""
        revised = self.reviser.rest(deadline) if self.reviser is not None else []
        return [self._revision(*r) for r in revised]

    # -- internals --

    def _maybe_partial_or_cut(self) -> list[TranscriptPartial | TranscriptFinal]:
        utt = self._utt
        assert utt is not None
        if utt.samples >= self.settings.max_utterance_s * SAMPLE_RATE:
            return [*self._cut_long_utterance()]
        if self.pack is None and not utt.voted and utt.samples >= (EARLY_VOTE_S + self.settings.min_silence_s) * SAMPLE_RATE:
            # while the language is open, each utterance votes once on its first EARLY_VOTE_S, whether
            # or not partials run (they are skipped under load): the finals' language then depends on
            # the audio alone, and the first final seldom waits for a detection (a recording's
            # language comes from its packed windows' own decodes instead). It waits until the turn is
            # still open min_silence_s later: a short word and the silence that ends it do not vote
            utt.voted = True
            self._maybe_detect_language(utt.array()[: int(EARLY_VOTE_S * SAMPLE_RATE)])
        due = utt.samples - utt.last_partial_at >= self.settings.partial_interval_s * SAMPLE_RATE
        if not due or not self._partials or utt.samples < 0.8 * SAMPLE_RATE:
            return []
        if self.endpointer.silent_frames > 0:
            return []  # the speaker is pausing: the final may be moments away, keep the decoder free for it
        utt.last_partial_at = utt.samples
        hyp = self._decode(utt.array(), "partial", offset=utt.start_sample / SAMPLE_RATE)
        return [] if hyp is None else [self._partial(utt, hyp, utt.samples)]

    def _partial(self, utt: Utterance, hyp: Hypothesis, samples: int) -> TranscriptPartial:
        words = hyp.text.split()
        n = agreed_prefix(utt.previous_words, words)
        utt.previous_words = words
        return TranscriptPartial(
            speaker=self.speaker,
            role=self.role,
            channel=self.channel,
            start=utt.start_sample / SAMPLE_RATE,
            end=(utt.start_sample + samples) / SAMPLE_RATE,
            text=hyp.text,
            stable_text=" ".join(words[:n]),
            language=hyp.language,
        )

    def _speculate(self) -> list[TranscriptPartial]:
        """In a pause: decode the final now, on exactly the audio it will have if the silence lasts."""
        utt, ep = self._utt, self.endpointer
        assert utt is not None
        end = (ep.frame_index - ep.silent_frames) * FRAME + ep.pad  # where the end boundary will fall
        samples = end - utt.start_sample
        out: list[TranscriptPartial] = []
        if utt.speculative is not None and (ep.silent_frames == 0 or utt.speculative[0] != samples):
            # speech resumed (perhaps only for a frame): the result is no final, but still a fine partial
            done, hyp, _ = utt.speculative
            utt.speculative = None
            out = [self._partial(utt, hyp, done)] if hyp.text else []
        ready = ep.silent_frames * FRAME >= self.settings.speculate_after_s * SAMPLE_RATE
        if utt.speculative is None and ready and 0.2 * SAMPLE_RATE <= samples <= utt.samples:
            audio = utt.array()[:samples]
            vote = self._detect(audio)  # counted only if this becomes the final, as the final would count it
            early = self._decode(audio, "speculative", offset=utt.start_sample / SAMPLE_RATE, vote=vote)
            if early is not None:
                utt.speculative = (samples, early, vote)
                if early.text and self.on_speculation is not None:
                    self.on_speculation(early.text)
        return out

    def _cut_long_utterance(self) -> list[TranscriptFinal]:
        """A very long turn: final up to its last complete word, the rest carried over."""
        utt = self._utt
        assert utt is not None
        heard = utt.array()
        # decode exactly the first max_utterance_s: where the turn is cut does not depend on how the
        # audio happened to arrive (chunk sizes vary with load), so a replay cuts it the same way
        audio = heard[: int(self.settings.max_utterance_s * SAMPLE_RATE)]
        start = utt.start_sample / SAMPLE_RATE
        self._maybe_detect_language(audio)
        hyp = self._decode(audio, "final", offset=start)
        assert hyp is not None
        cut, kept = audio.size, hyp
        if len(hyp.words) >= 2:  # the last word may run on past the cut: it goes with the rest
            n = cut_after(hyp.words, start + self.settings.max_utterance_s * MIN_CUT_SHARE)
            pause = (hyp.words[n].end + hyp.words[n + 1].start) / 2
            cut = int(np.clip(round((pause - start) * SAMPLE_RATE), SAMPLE_RATE, audio.size))
            kept = hyp.only(hyp.words[: n + 1])
        self._count += 1
        self._revise_later(utt.start_sample, audio[:cut], kept.text)
        self.heard_until = (utt.start_sample + cut) / SAMPLE_RATE
        self._utt = Utterance(start_sample=utt.start_sample + cut, audio=[heard[cut:]], samples=heard.size - cut)
        return [*self._decode_pack(), *self._final(utt.start_sample, cut, kept)]

    def _finalize(self, end_sample: int | None = None) -> list[TranscriptFinal]:
        """`end_sample`: the VAD's padded end of speech; the silence after it (already fed) is dropped."""
        utt, self._utt = self._utt, None
        assert utt is not None
        audio = utt.array()
        if end_sample is not None:
            audio = audio[: max(end_sample - utt.start_sample, 0)]
        self._count += 1  # every utterance the VAD cut counts, heard or not: ids follow the audio alone
        if audio.size < 0.2 * SAMPLE_RATE:
            return []
        self.heard_until = (utt.start_sample + audio.size) / SAMPLE_RATE
        if self.pack is not None:  # a recording: decoded later, with its neighbours in one window
            out = self._decode_pack() if not self.pack.fits(audio) else []
            self.pack.add(self._count, utt.start_sample, audio)
            return out
        hyp: Hypothesis | None
        if utt.speculative is not None and utt.speculative[0] == audio.size:
            _, hyp, vote = utt.speculative  # decoded during the pause, on this very audio
            self._commit_vote(vote)
        else:
            self._maybe_detect_language(audio)
            hyp = self._decode(audio, "final", offset=utt.start_sample / SAMPLE_RATE)
        assert hyp is not None  # finals are never skipped
        self._revise_later(utt.start_sample, audio, hyp.text)
        return self._final(utt.start_sample, audio.size, hyp)

    def _decode_pack(self) -> list[TranscriptFinal]:
        """The packed utterances decoded in one window, each getting the words heard within it."""
        if self.pack is None or not self.pack.items:
            return []
        audio, spans = self.pack.take()
        hyp = self._decode(audio, "final", offset=0.0)
        assert hyp is not None
        if self.language is None and hyp.language:
            # detected on the window's own encoder pass: a whole window of this speaker is one vote
            # worth locking on
            self._commit_vote((hyp.language, 1.0))
        return [
            f
            for count, start_sample, size, part in Pack.parts(hyp, spans)
            for f in self._final(start_sample, size, part, count)
        ]

    def _revise_later(self, start_sample: int, audio: np.ndarray, text: str) -> None:
        """A live turn just decoded (with the prompt as it is now) goes to the reviser's pack."""
        if self.reviser is not None:
            self.reviser.add(self._count, start_sample, audio, text, self._prompt(), self.language)

    def _final(self, start_sample: int, size: int, hyp: Hypothesis, count: int | None = None) -> list[TranscriptFinal]:
        """The final of the utterance at `start_sample` (`size` samples long), if anything was said;
        its words are the speaker's next prompt."""
        if not hyp.text:
            return []
        self._said.append(hyp.text)
        return [self._event(start_sample, size, hyp, count or self._count)]

    def _event(self, start_sample: int, size: int, hyp: Hypothesis, count: int) -> TranscriptFinal:
        start = start_sample / SAMPLE_RATE
        end = start + size / SAMPLE_RATE
        if hyp.words:  # the VAD's edges include padding and decay; word timings are tighter
            start, end = max(start, hyp.words[0].start), min(end, hyp.words[-1].end)
        return TranscriptFinal(
            speaker=self.speaker,
            role=self.role,
            channel=self.channel,
            start=round(start, 3),
            end=round(end, 3),
            text=hyp.text,
            words=hyp.words,
            language=hyp.language,
            utterance_id=f"{self.speaker}-{count}",
            avg_logprob=hyp.avg_logprob,
            no_speech_prob=hyp.no_speech_prob,
        )

    def _revision(self, start_sample: int, size: int, hyp: Hypothesis, count: int) -> TranscriptFinal:
        """The turn's final decoded again in a pack: it replaces the live one of its utterance."""
        final = self._event(start_sample, size, hyp, count)
        final.revision = 1
        return final

    def _maybe_detect_language(self, audio: np.ndarray) -> None:
        self._commit_vote(self._detect(audio))

    def _detect(self, audio: np.ndarray) -> Vote | None:
        """Per-speaker language: a vote from each of the first utterances with at least
        MIN_VOTE_SPEECH_S of speech besides the VAD's padding, then locked. Counting the padding let a
        0.5 s prompt («Сейчас») vote, detected as English, and lock a Russian speaker to English."""
        if self.language or audio.size - 2 * self.endpointer.pad < MIN_VOTE_SPEECH_S * SAMPLE_RATE:
            return None
        return self.decoder.detect_language(audio, self.settings.languages)

    def _with_vote(self, vote: Vote | None) -> tuple[list[Vote], str | None]:
        """The votes and the locked language there would be after counting `vote` (nothing changes yet)."""
        votes = self._language_votes + ([vote] if vote else [])
        locked = self.language
        if locked is None and vote is not None and (vote[1] > 0.9 or len(votes) >= 3):
            locked = max({lg for lg, _ in votes}, key=lambda lg: sum(q for x, q in votes if x == lg))
        return votes, locked

    def _commit_vote(self, vote: Vote | None) -> None:
        self._language_votes, self.language = self._with_vote(vote)

    def _decode(self, audio: np.ndarray, mode: Mode, offset: float, vote: Vote | None = None) -> Hypothesis | None:
        """Decode in the language known so far, counting `vote` (not yet committed) as if it were."""
        votes, language = self._with_vote(vote)
        if language is None and votes:
            language = votes[-1][0]
        return self.decoder.decode(audio, language, mode, offset, self._prompt() if mode != "partial" else "")

    def _prompt(self) -> str:
        """The end of what this speaker said before, cut at a word boundary."""
        limit = self.settings.prompt_chars
        text = " ".join(self._said)[-limit:] if limit > 0 else ""
        return text if len(text) < limit else text.partition(" ")[2]


def cut_after(words: list[Word], earliest: float) -> int:
    """Where a long turn is cut: after the latest sentence end, else the latest clause end, that
    ends after `earliest`; else before the last word. The speaker pauses there, so no word is split
    between two finals (a fixed cut split «шевеля» into «Шиви» + «для»), and the rest starts a clause."""
    inner = range(len(words) - 1)  # the last word may run on past the cut
    for ends in (SENTENCE_END, CLAUSE_END):
        marked = [i for i in inner if words[i].end >= earliest and words[i].word.strip().endswith(ends)]
        if marked:
            return marked[-1]
    return len(words) - 2
