# atencion: the LitServe service with the shipped checkpoints inside.
#
#   CPU (default):  docker build -t atencion .
#   GPU:            docker build -t atencion:gpu --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
#
# PyTorch's CUDA wheels bring their own CUDA runtime libraries, so the GPU variant keeps the same slim base;
# the host needs only the NVIDIA driver and the NVIDIA Container Toolkit (compose's `gpu` profile reserves
# the device). Pick the CUDA build your driver supports from pytorch.org's install matrix.
# Settings are environment variables (docs/deploy.md lists them all; compose passes every one).
#
# Build arguments (the defaults are the published image):
#   PYTHON_IMAGE       the base: Python 3.11 on Debian bookworm with `python` and `pip` on PATH
#   TORCH_INDEX_URL    the package index pip takes torch and its dependencies from (a PEP 503 index)
#   COMPILER_PACKAGES  Debian packages to add; `g++` gives torch.compile the C++ compiler it needs on CPU
#                      (+374 MB, measured: docs/deploy.md); empty by default, keeping the CPU image under 1.5 GB
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG COMPILER_PACKAGES=

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# A non-root user owns the application and the Hugging Face cache (a volume: Hub-pulled models survive restarts).
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin atencion \
    && mkdir -p /app /var/cache/huggingface \
    && chown atencion:atencion /var/cache/huggingface

RUN if [ -n "${COMPILER_PACKAGES}" ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends ${COMPILER_PACKAGES} \
        && rm -rf /var/lib/apt/lists/*; \
    fi

WORKDIR /app

# Torch first, from the chosen index, so `pip install .` below finds the pin already satisfied
# (2.13.0+cpu satisfies torch==2.13.0) and never pulls the multi-GB CUDA wheel from PyPI into a CPU image.
# Its C++ unit-test binaries (torch/test, 83 MB) are never used at run time.
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}" \
    && python -c "import pathlib, shutil, torch; shutil.rmtree(pathlib.Path(torch.__file__).parent / 'test', ignore_errors=True)"

# The project's dependencies, in their own layer: rebuilt only when pyproject.toml changes. They pin
# litserve~=0.2.19: the service reaches into its batched loop and private names.
COPY pyproject.toml /tmp/src/
RUN python -c "import tomllib; print(*tomllib.load(open('/tmp/src/pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The project itself, installed into site-packages; the sources are not kept in the image.
COPY README.md /tmp/src/
COPY atencion/ /tmp/src/atencion/
COPY modeling/ /tmp/src/modeling/
COPY training/ /tmp/src/training/
COPY service/ /tmp/src/service/
RUN pip install /tmp/src && rm -rf /tmp/src

# The mat-vec kernels decoding uses (modeling/matvec.py), built once here so that every container runs them
# without a compiler: g++ is installed for this step only (unless COMPILER_PACKAGES brought one) and removed in
# the same layer (+36 MB measured: the library and the Debian updates g++ pulls in, against +374 MB for keeping
# g++). One build serves any x86-64 CPU (it picks AVX-512, AVX2 or baseline code at load).
ENV ATENCION_KERNEL_CACHE=/opt/atencion/kernels
RUN if command -v g++ >/dev/null; then python -m modeling.matvec; \
    else apt-get update \
        && apt-get install -y --no-install-recommends g++ \
        && python -m modeling.matvec \
        && apt-get purge -y --auto-remove g++ \
        && apt-get clean && rm -rf /var/lib/apt/lists/*; \
    fi

# The shipped models (config.json, model.safetensors, tokenizer.json each); served offline by default.
COPY checkpoints/ checkpoints/

ENV HF_HOME=/var/cache/huggingface \
    ATENCION_ENCODERS=/app/checkpoints/encoder-dense,/app/checkpoints/encoder-sparse \
    ATENCION_DECODERS=/app/checkpoints/decoder-dense,/app/checkpoints/decoder-sparse \
    ATENCION_HOST=0.0.0.0 \
    ATENCION_PORT=8000 \
    ATENCION_ACCELERATOR=auto

USER atencion
VOLUME ["/var/cache/huggingface"]
EXPOSE 8000

# Slim images have no curl: ask /health (200 only once every worker has loaded) with the standard library.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; q = r.Request('http://127.0.0.1:%s/health' % os.environ.get('ATENCION_PORT', '8000'), headers={'X-API-Key': os.environ.get('ATENCION_API_KEY', '')}); raise SystemExit(r.urlopen(q, timeout=4).status != 200)"]

# The service drains in-flight requests on SIGTERM (compose gives it a long stop_grace_period).
STOPSIGNAL SIGTERM
CMD ["atencion", "serve"]
