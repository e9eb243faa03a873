# BrightRun trainer image for RunPod Serverless: runs trainer.handler, one job at a time.
#
# Build and push (from the repository root; .dockerignore sends only trainer/ as context):
#
#   docker buildx build --platform linux/amd64 -t <registry>/brightrun-trainer:<tag> --push .
#
# The base image's torch must be the version pinned in trainer/requirements.txt (CUDA 12.8
# wheels; bitsandbytes 0.50 ships kernels for it): the build fails if pip replaced it. No
# secrets are baked in: HF_TOKEN and the rest come from the endpoint's environment; storage
# is reached by signed URLs.
ARG BASE_IMAGE=pytorch/pytorch:2.13.0-cuda12.8-cudnn9-runtime
FROM ${BASE_IMAGE}

# HF_XET_HIGH_PERFORMANCE: huggingface_hub 2.x downloads through hf-xet (pinned in
# trainer/requirements.txt); this lets it use every core and more memory for a model download.
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TOKENIZERS_PARALLELISM=false \
    HF_HOME=/runpod-volume/huggingface \
    HF_HUB_DISABLE_TELEMETRY=1 \
    HF_XET_HIGH_PERFORMANCE=1

WORKDIR /app
# Dependencies before the code, so a code change reuses this layer.
# trainer/requirements.lock (from trainer/requirements.txt by `make lock`): every package at an
# exact version with hashes, torch left out (the base image's is kept); nothing is resolved here.
# llama-cpp-python (the `gguf` action quantises with it) and rouge_score have no wheel and
# build from source, on the locked build tools installed first (trainer/requirements-build.lock,
# --no-build-isolation: a build fetches nothing) with the system's C/C++ toolchain, cmake and
# ninja; llama.cpp as a portable CPU build (GGML_NATIVE=OFF: not tuned to the build machine's
# CPU; quantising runs on the CPU, no GPU backend is needed).
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake ninja-build \
    && rm -rf /var/lib/apt/lists/*
COPY trainer/requirements-build.lock trainer/requirements.lock /app/trainer/
RUN python -m pip install --require-hashes --no-deps -r /app/trainer/requirements-build.lock \
    && CMAKE_ARGS="-DGGML_NATIVE=OFF" python -m pip install --no-build-isolation \
    --require-hashes --no-deps -r /app/trainer/requirements.lock \
    && python -c "import torch; assert torch.__version__.startswith('2.13.0') and torch.version.cuda == '12.8', ('a second torch was installed over the base image', torch.__version__, torch.version.cuda)" \
    && python -c "import torch, bitsandbytes, peft, transformers, hf_xet, gguf, llama_cpp; print(torch.__version__, torch.version.cuda)"

# Optional: flash-attention for padding-free varlen attention on the GPU. Without it the
# trainer runs PyTorch SDPA once per packed sample (exact, somewhat slower).
ARG FLASH_ATTN_WHEEL=""
RUN if [ -n "$FLASH_ATTN_WHEEL" ]; then python -m pip install "$FLASH_ATTN_WHEEL"; fi

COPY trainer /app/trainer
RUN python -m compileall -q /app/trainer

# MODEL_CACHE_DIR, CHECKPOINT_DIR and ADAPTER_DIR default to /runpod-volume/{models,
# checkpoints,adapters} when the network volume is mounted (see trainer/env.py).
CMD ["python", "-u", "-m", "trainer.handler"]
