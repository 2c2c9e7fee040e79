"""Download and sharding as Apache Beam pipelines: the same outputs as the local engines, on any Beam runner.

    python tools/download_images.py --input train.json --output-dir data/imat --engine beam -- --runner=DirectRunner ...
    python tools/make_tfrecords.py --input data/imat ... --engine beam -- <the same pipeline options>

`pipeline` parses the options after `--` and runs a pipeline with one-line errors; `work` lays out a distributed
download's work shards; `download` and `shards` are the two pipelines. Importing this package imports neither
apache_beam nor TensorFlow.
"""
