# The project's image for docker-compose.yml: the gateway, the agents and the one-shot init all run from it.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Dependencies first, from the pinned constraints, so a code change does not reinstall torch.
COPY pyproject.toml constraints.txt README.md* ./
RUN mkdir -p agents events gateway infra model cli bench \
    && touch agents/__init__.py events/__init__.py gateway/__init__.py infra/__init__.py model/__init__.py \
       cli/__init__.py bench/__init__.py \
    && pip install -c constraints.txt . \
    && pip uninstall -y llm-from-zero
COPY . .
RUN pip install --no-deps -c constraints.txt . \
    && useradd --create-home --uid 10001 lfz \
    && mkdir -p /data && chown lfz /data
USER lfz
VOLUME ["/data"]
EXPOSE 8000
CMD ["python", "-m", "gateway", "--host", "0.0.0.0", "--port", "8000"]
