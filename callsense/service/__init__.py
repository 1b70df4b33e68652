"""The live service: ingest of every protocol, one worker per call, fan-out to consoles with resume,
HTTP (health, metrics, dashboard), and the clients (`callsense stream`, the terminal console)."""
