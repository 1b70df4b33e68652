"""`callsense bench`: speed, latency, load and accuracy on real labelled recordings."""
