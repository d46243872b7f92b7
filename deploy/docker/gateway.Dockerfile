# syntax=docker/dockerfile:1
# py_gateway. Build context: the repository root (see deploy/docker/README.md):
#   docker build -f deploy/docker/gateway.Dockerfile -t nuell/gateway:0.1.0 .
# The same image serves (`serve`, the default) and migrates (`migrate`).

# ---- build: generate the stubs from proto/, build every wheel
FROM python:3.11-slim-bookworm AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# Versions from py_gateway/constraints.txt, the pins `make test` runs with.
RUN pip install grpcio-tools==1.85.1
COPY proto/nuell proto/nuell
COPY proto/third_party proto/third_party
COPY py_gateway/pyproject.toml py_gateway/README.md py_gateway/constraints.txt py_gateway/
COPY py_gateway/src/nuell_gateway py_gateway/src/nuell_gateway
WORKDIR /src/proto
RUN find nuell -name '*.proto' -print0 \
      | xargs -0 python -m grpc_tools.protoc -I. -Ithird_party \
          --python_out=../py_gateway/src --grpc_python_out=../py_gateway/src \
          buf/validate/validate.proto
WORKDIR /src
RUN pip wheel --wheel-dir /wheels -c py_gateway/constraints.txt ./py_gateway

# ---- runtime: the wheels only, no compiler, no build tools
FROM python:3.11-slim-bookworm AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    NUELL_GATEWAY_ADDR=0.0.0.0:50051
RUN groupadd --system --gid 10001 nuell \
    && useradd --system --uid 10001 --gid nuell --no-create-home --shell /usr/sbin/nologin nuell
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels /wheels/nuell_gateway-*.whl
COPY --chmod=0755 deploy/docker/secret_env.py /usr/local/bin/nuell-entrypoint
USER 10001:10001
EXPOSE 50051
# gRPC health (grpc.health.v1, service ""), with the grpcio the image already has.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, grpc; from grpc_health.v1 import health_pb2 as h, health_pb2_grpc as g; port = os.environ['NUELL_GATEWAY_ADDR'].rpartition(':')[2]; s = g.HealthStub(grpc.insecure_channel('127.0.0.1:' + port)).Check(h.HealthCheckRequest(), timeout=2).status; sys.exit(s != h.HealthCheckResponse.SERVING)"]
ENTRYPOINT ["/usr/local/bin/nuell-entrypoint", "nuell-gateway"]
CMD ["serve"]
