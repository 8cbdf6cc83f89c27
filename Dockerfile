# syntax=docker/dockerfile:1
#
# The function as a container image (template-image.yaml): for model bundles too big for the
# zip (GigaAM int8 is 233 MB; an image may be 10 GB) when downloading the bundle from S3 at
# cold start (template.yaml's ModelS3Uri) is not wanted. Build context: the repository root;
# .dockerignore sends only what is copied below.
#
#   python scripts/stage_layers.py bundles/gigaam-v3   # bundle -> layers/model/model, ffmpeg check
#   docker build --platform linux/amd64 -t lambda-asr .   # or linux/arm64, with an arm64 ffmpeg
#   sam build -t template-image.yaml                       # the same build, driven by SAM
#
# Layout is the zip variant's: /opt/bin/ffmpeg and /opt/model where its layers put them, the
# code in ${LAMBDA_TASK_ROOT} (/var/task), so the handler needs no image-specific setting.
FROM public.ecr.aws/lambda/python:3.12

# Run-time packages only (requirements-dev.txt is the export and test toolchain). The base
# image ships boto3, which satisfies requirements.txt's boto3 line.
COPY requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt && rm /tmp/requirements.txt

# The audio-only static ffmpeg (scripts/build_ffmpeg.sh -> layers/ffmpeg/bin/ffmpeg), built
# for the image's architecture.
COPY --chmod=0755 layers/ffmpeg/bin/ffmpeg /opt/bin/ffmpeg

# The model bundle: a directory in the build context, by default the model layer's staging
# directory (scripts/stage_layers.py). Before the code, so a code change reuses this layer.
ARG MODEL_BUNDLE=layers/model/model
COPY ${MODEL_BUNDLE}/ /opt/model/

COPY lambda_app/ ${LAMBDA_TASK_ROOT}/

# Refuse to build an image around a corrupt, partial or unverified bundle (the runtime's own
# checks: every sha256, the export's verification), and compile the code's bytecode now:
# /var/task is read-only at run time.
RUN python3 -c "from asr.bundle import load_bundle; print(load_bundle('/opt/model').config.model_id)" \
    && python3 -m compileall -q ${LAMBDA_TASK_ROOT}

ENV MODEL_DIR=/opt/model \
    ASR_FFMPEG_PATH=/opt/bin/ffmpeg

CMD ["handler.lambda_handler"]
