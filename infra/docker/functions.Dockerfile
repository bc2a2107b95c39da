# syntax=docker/dockerfile:1.7
# Lambda container image of Validate (sharp, a native module) and Post-process (ffmpeg):
# Debian with its ffmpeg package, the two handlers bundled by esbuild, and the AWS Lambda
# Runtime Interface Client. One image, two functions: each sets its handler as the command
# (infra/lib/functions.ts). Built by CDK at deploy time with the repository root as the
# context; what the context holds is listed in functions.Dockerfile.dockerignore.
#
#   docker build -f infra/docker/functions.Dockerfile -t cil-functions .
ARG NODE_IMAGE=node:24-bookworm-slim

FROM ${NODE_IMAGE} AS build
# Toolchain for the runtime interface client's native part.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates g++ make cmake unzip autoconf automake libtool python3 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
# Every dependency (esbuild is a dev dependency) without install scripts, so nothing downloads
# binaries (onnxruntime-node's CUDA provider, the pinned node); esbuild's own binary comes as a
# platform package.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY shared/src ./shared/src
COPY functions/src ./functions/src
RUN npx esbuild functions/src/validate/handler.ts functions/src/postprocess/handler.ts \
      --bundle --platform=node --target=node24 --format=esm --minify --sourcemap \
      --outbase=functions/src --outdir=/opt/task --out-extension:.js=.mjs \
      --external:sharp \
      "--banner:js=import { createRequire as __cilCreateRequire } from 'node:module'; const require = __cilCreateRequire(import.meta.url);"
# sharp (the lockfile's version, with its prebuilt libvips) and the runtime interface client.
WORKDIR /opt/runtime
RUN sharp_version="$(node -p "require('/src/package-lock.json').packages['node_modules/sharp'].version")" \
 && npm init -y >/dev/null \
 && npm install --omit=dev --no-audit --no-fund "sharp@${sharp_version}" aws-lambda-ric@4.0.2

FROM ${NODE_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends ffmpeg ca-certificates \
 && rm -rf /var/lib/apt/lists/*
ENV LAMBDA_TASK_ROOT=/var/task \
    NODE_OPTIONS=--enable-source-maps \
    FFMPEG_PATH=/usr/bin/ffmpeg
WORKDIR /var/task
COPY --from=build /opt/runtime/node_modules ./node_modules
COPY --from=build /opt/task ./
ENTRYPOINT ["/var/task/node_modules/.bin/aws-lambda-ric"]
CMD ["validate/handler.handler"]
