"""fashion_tf.app: a web page (Streamlit) to label photos with a trained run and to look inside the run.

    python -m fashion_tf.app --run-dir RUN [--host 127.0.0.1] [--port 8501] [--data SHARDS]
                             [--allow-private-urls | --no-urls] [--max-image-mb 20]

- options: AppOptions and the command line (shared by the launcher and the page)
- labelling: what "Label photos" computes (read uploads and URLs, score as one batch, group the labels,
  the CSV / JSON-lines rows of predict)
- run_view: what "Look inside the run" reads (metrics.json, history.csv, val_predictions.npz, worst mistakes)
- shard_images: validation images by image id, read from the run's shard folder
- page: the Streamlit page itself, thin; __main__: starts `streamlit run page.py` with safe server flags

No TensorFlow is imported until a page needs the model or the shards.
"""
