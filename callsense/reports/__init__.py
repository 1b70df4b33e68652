"""After the call: reports, redaction of personal data, the SQLite store and service-quality audits."""
