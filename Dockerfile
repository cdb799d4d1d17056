# One image for every Warren process; the arguments pick the role, e.g.
#   docker run --rm warren:dev migrate
#   docker run --rm warren:dev worker --app examples.orders.workers:worker --pool payments
# Configuration comes from the environment at run time (WARREN_*, see orchestrator/config.py):
# nothing secret is baked in.

# --- build: install the project and its dependencies into a virtualenv -----------------------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

WORKDIR /src

# Dependencies first, from pyproject.toml alone, so that a code change does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

# Then the project itself (orchestrator, workers, migrations, examples: see pyproject.toml).
COPY . .
RUN pip install .

# --- runtime: the virtualenv only, run by an unprivileged user --------------------------------
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONFAULTHANDLER=1 \
    PATH=/opt/venv/bin:$PATH

RUN groupadd --system --gid 10001 warren \
 && useradd --system --uid 10001 --gid warren --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin warren

# Owned by root and read-only to the service user.
COPY --from=build /opt/venv /opt/venv

WORKDIR /app
USER 10001:10001

# `warren api` (it binds 127.0.0.1 unless told --host 0.0.0.0 or WARREN_API_HOST=0.0.0.0).
EXPOSE 8000

ENTRYPOINT ["warren"]
CMD ["--help"]
