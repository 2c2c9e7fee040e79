# A worker image for `--engine beam` on Dataflow, Flink or Spark: Beam's own Python SDK image (its boot
# program starts the SDK harness) with TensorFlow and fashion_tf installed once, instead of on every worker
# at start-up. Build it from the repository root and push it where the runner's workers can pull it:
#
#   docker build -f docker/beam-worker.Dockerfile -t REGION-docker.pkg.dev/PROJECT/REPO/fashion-tf-worker:0.1.0 .
#   docker push REGION-docker.pkg.dev/PROJECT/REPO/fashion-tf-worker:0.1.0
#
# then pass --sdk_container_image=<that tag> (Dataflow) or --environment_type=DOCKER
# --environment_config=<that tag> (Flink, Spark) after the `--` of our commands. The Beam version here must be
# the one the driver runs (pip show apache-beam).
FROM apache/beam_python3.11_sdk:2.77.0

COPY setup.py README.md /opt/fashion_tf/
COPY fashion_tf /opt/fashion_tf/fashion_tf
RUN pip install --no-cache-dir "/opt/fashion_tf[beam]"

# The download workers never import TensorFlow (its libcurl clashes with pycurl's); the shard workers need
# neither: both only import fashion_tf.
