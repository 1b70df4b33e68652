"""Audio in: recordings, live protocols (plain, Twilio, mod_audio_fork, AudioSocket), codecs and
resampling to the internal rate, and voice activity detection."""
