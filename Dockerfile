# StellarChat image: one image for every process of the production topology
# (docs/deployment.md): the daphne web process (the default command), the inference worker
# (`python manage.py runworker inference`) and the one-shot `python manage.py migrate`.
#
#   docker build -t stellarchat .                             # CPU torch (the default)
#   docker build -t stellarchat:cuda --build-arg TORCH_VARIANT=cuda .
#
# TORCH_VARIANT picks the torch wheel for requirements.txt's `torch==2.13.0` pin:
#   cpu    PyTorch's CPU-only wheel index (small; no GPU support)
#   cuda   PyPI's default Linux x86_64 wheel, built with CUDA (its CUDA libraries come as pip
#          packages, so this slim base needs only the NVIDIA driver and container toolkit)
#   cuNNN  PyTorch's wheel index for that CUDA version (for example cu128); use one that
#          pytorch.org lists for torch 2.13.0
#
# No model weights are baked in except inference/bundled/stellarbyte-mini, which is part of
# the source. Hub models (STELLARCHAT_MODEL=org/name) download at run time into HF_HOME,
# which docker-compose.yml keeps on a volume.
FROM python:3.11-slim

ARG TORCH_VARIANT=cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    HOME=/home/stellarchat \
    HF_HOME=/home/stellarchat/.cache/huggingface \
    STELLARCHAT_DATA_DIR=/home/stellarchat/data

# A fixed uid/gid so volume ownership stays the same across rebuilds.
RUN groupadd --system --gid 10001 stellarchat \
    && useradd --system --uid 10001 --gid stellarchat --home-dir /home/stellarchat \
       --shell /usr/sbin/nologin stellarchat \
    && mkdir -p "$HF_HOME" "$STELLARCHAT_DATA_DIR" \
    && chown -R stellarchat:stellarchat /home/stellarchat

WORKDIR /app

# Dependencies first, so editing the app does not reinstall torch.
COPY requirements.txt ./
RUN case "$TORCH_VARIANT" in \
      cpu|cu[0-9]*) torch_index="--extra-index-url https://download.pytorch.org/whl/$TORCH_VARIANT" ;; \
      cuda) torch_index="" ;; \
      *) echo "TORCH_VARIANT=$TORCH_VARIANT: use cpu, cuda or cuNNN (for example cu128)" >&2; exit 1 ;; \
    esac \
    && pip install $torch_index -r requirements.txt

COPY . .

# Static files are collected at build time, hashed and compressed. Settings choose the hashing
# storage only once staticfiles/staticfiles.json exists, so an empty manifest is seeded first
# (collectstatic then replaces it). The key below exists only for this command and is not in
# any running container.
RUN mkdir -p staticfiles \
    && echo '{"version": "1.1", "paths": {}}' > staticfiles/staticfiles.json \
    && DJANGO_DEBUG=0 \
       DJANGO_SECRET_KEY=collectstatic-build-only-not-a-secret-0123456789 \
       python manage.py collectstatic --noinput \
    && test "$(wc -c < staticfiles/staticfiles.json)" -gt 100

USER stellarchat

EXPOSE 8000

# No HEALTHCHECK here: the same image runs the worker and migrate, which serve no HTTP.
# docker-compose.yml checks the web service through /readyz.
CMD ["daphne", "--bind", "0.0.0.0", "--port", "8000", "stellarchat.asgi:application"]
