#!/usr/bin/env python
"""Input-pipeline throughput on the real fashion-products images, side by side in one run.

    python bench/bench_data.py [--seconds 16] [--sizes 224,299] [--skip-tfmodels]

Measures images/s (warm-up excluded; every measure split into interleaved rounds so load from other users hits
all of them alike) at each output size:
  (a) our training pipeline, crop+flip and the default augmentation (DataConfig.augment)
  (b) our evaluation pipeline
  (c) a plain tf.data map over the same records: parse, decode_jpeg, resize, batch, prefetch = the decode+resize limit
  (d) TF Model Garden's classification Parser (is_multilabel=True, training: random crop + flip), run in its own
      venv bench/.venv-tfmodels (tf-models-official pins an older TF) together with (c) again there
  (e) keras.utils.image_dataset_from_directory over the same images as files (class folders of symlinks)
plus (a) and (c) on 1,000 of the images upscaled to 800 px, and two micro-measures: our rotate vs
keras.layers.RandomRotation, our RandAugment vs keras.layers.RandAugment (both on batches inside tf.data).
Results: bench/results/bench_data.{json,md}. Shards, upscaled images and the symlink tree go to --work-dir.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fashion_tf import schema  # noqa: E402  (TensorFlow-free import: also works in the Model Garden venv)
from fashion_tf.shard_folder import ShardFolder, shard_names  # noqa: E402

BENCH_DIR = REPO / "bench"
RESULTS_DIR = BENCH_DIR / "results"
TFMODELS_VENV = BENCH_DIR / ".venv-tfmodels"
TFMODELS_REQUIREMENT = "tf-models-official==2.20.*"
UPSCALED_SIZE = 800
UPSCALED_COUNT = 1000
CYCLE_LENGTH = 8


def data_dir() -> Path:
    return Path(os.environ.get("FASHION_PRODUCTS_DIR", REPO.parent / "shared/data/fashion-products"))


# ---- inputs -------------------------------------------------------------------------------------
def read_annotations(source: Path) -> list[tuple[str, list[str]]]:
    """(imageId, [labelId, ...]) for every image of train.json that has a file."""
    doc = json.loads((source / "train.json").read_text())
    labels = {str(a["imageId"]): [str(x) for x in a.get("labelId", [])] for a in doc.get("annotations", [])}
    out = []
    for image in doc["images"]:
        image_id = str(image["imageId"])
        if (source / "images" / f"{image_id}.jpg").is_file():
            out.append((image_id, labels.get(image_id, [])))
    return out


def write_shards_ourselves(out: Path, items, label_map, num_shards: int, image_bytes) -> None:
    """Minimal shard writer (schema.serialize_example) for when tools/make_tfrecords.py is not usable."""
    import numpy as np
    import tensorflow as tf

    out.mkdir(parents=True, exist_ok=True)
    names = shard_names("train", num_shards)
    writers = [tf.io.TFRecordWriter(str(out / n)) for n in names]
    lengths, total = [0] * num_shards, 0
    counts = np.zeros(len(label_map), dtype=np.int64)
    for i, (image_id, label_ids) in enumerate(items):
        encoded, height, width = image_bytes(image_id)
        indices = label_map.indices(label_ids)
        record = schema.serialize_example(
            encoded, "jpeg", height, width, indices.tolist(), image_id, hashlib.sha256(encoded).hexdigest()
        )
        writers[i % num_shards].write(record)
        lengths[i % num_shards] += 1
        counts[indices] += 1
        total += len(record)
    for w in writers:
        w.close()
    folder = ShardFolder(out)
    label_map.to_json(folder.label_map_path)
    info = {
        "num_labels": len(label_map),
        "splits": {
            "train": {
                "num_examples": len(items),
                "num_bytes": total,
                "shards": names,
                "shard_lengths": lengths,
                "label_counts": counts.tolist(),
            }
        },
        "groups": {g: label_map.group_members(g).tolist() for g in label_map.group_names()},
    }
    folder.info_path.write_text(json.dumps(info))


def build_shards(source: Path, work: Path) -> tuple[Path, str]:
    """Shards of all real images: tools/make_tfrecords.py when it works, else our small writer."""
    from fashion_tf.errors import UserError
    from fashion_tf.labels import LabelMap

    out = work / "shards-224"
    items = read_annotations(source)
    try:
        written = sum(int(split["num_examples"]) for split in ShardFolder(out).info["splits"].values())
        if written >= len(items) * 0.9:  # make_tfrecords holds some images out as a validation split
            return out, (out / "made_by").read_text().strip() if (out / "made_by").exists() else "cached"
    except UserError:
        pass
    shutil.rmtree(out, ignore_errors=True)
    tool = REPO / "tools" / "make_tfrecords.py"
    command = [
        sys.executable, str(tool), "--input", str(source / "train.json"), "--images", str(source / "images"),
        "--label-map", str(source / "label_map.csv"), "--output-dir", str(out),
    ]
    made_by = "tools/make_tfrecords.py"
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=900) if tool.exists() else None
        ok = done is not None and done.returncode == 0 and ShardFolder(out).num_examples("train") > 0
        why = "missing" if done is None else (done.stderr.strip().splitlines() or ["?"])[-1]
    except (subprocess.TimeoutExpired, UserError) as err:
        ok, why = False, str(err)
    if not ok:
        print(f"tools/make_tfrecords.py not usable ({why}); writing shards with bench's own writer")
        shutil.rmtree(out, ignore_errors=True)
        label_map = LabelMap.from_csv(source / "label_map.csv")

        def image_bytes(image_id):
            return (source / "images" / f"{image_id}.jpg").read_bytes(), 224, 224

        write_shards_ourselves(out, items, label_map, 8, image_bytes)
        made_by = "bench/bench_data.py writer (schema.serialize_example)"
    (out / "made_by").write_text(made_by)
    return out, made_by


def build_upscaled_shards(source: Path, work: Path) -> Path:
    from PIL import Image

    from fashion_tf.labels import LabelMap

    out = work / f"shards-{UPSCALED_SIZE}"
    if ShardFolder(out).info_path.exists():
        return out
    items = read_annotations(source)[:UPSCALED_COUNT]
    label_map = LabelMap.from_csv(source / "label_map.csv")

    def image_bytes(image_id):
        import io

        with Image.open(source / "images" / f"{image_id}.jpg") as image:
            big = image.convert("RGB").resize((UPSCALED_SIZE, UPSCALED_SIZE), Image.BICUBIC)
        buffer = io.BytesIO()
        big.save(buffer, "JPEG", quality=90)
        return buffer.getvalue(), UPSCALED_SIZE, UPSCALED_SIZE

    write_shards_ourselves(out, items, label_map, 4, image_bytes)
    return out


def build_class_tree(source: Path, work: Path) -> Path:
    """class-folder tree of symlinks (class = first label) for image_dataset_from_directory."""
    tree = work / "class-tree"
    if tree.exists():
        return tree
    for image_id, label_ids in read_annotations(source):
        folder = tree / (label_ids[0] if label_ids else "none")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{image_id}.jpg").symlink_to(source / "images" / f"{image_id}.jpg")
    return tree


# ---- pipelines -------------------------------------------------------------------------------------
def read_records(files: list[str]):
    """The reading stage shared by (c) and (d): files in parallel, repeated."""
    import tensorflow as tf

    return (
        tf.data.Dataset.from_tensor_slices(files)
        .repeat()
        .interleave(tf.data.TFRecordDataset, cycle_length=min(len(files), CYCLE_LENGTH), num_parallel_calls=tf.data.AUTOTUNE)
    )


def plain_pipeline(files: list[str], size: int, batch: int, num_labels: int):
    """(c): parse, decode_jpeg, resize, batch, prefetch."""
    import tensorflow as tf

    def fn(serialized):
        parsed = schema.parse_example(serialized, [schema.ENCODED, schema.LABEL])
        image = tf.image.resize(tf.io.decode_jpeg(parsed[schema.ENCODED], channels=3), [size, size])
        return image, schema.multi_hot(parsed[schema.LABEL], num_labels)

    ds = read_records(files).map(fn, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def model_garden_pipeline(files: list[str], size: int, batch: int, num_labels: int):
    """(d): TF Model Garden's classification Decoder + Parser (training: random crop + flip), multi-label."""
    import tensorflow as tf
    from official.vision.dataloaders import classification_input

    decoder = classification_input.Decoder(
        image_field_key=schema.ENCODED, label_field_key=schema.LABEL, is_multilabel=True
    )
    parser = classification_input.Parser(
        output_size=[size, size],
        num_classes=num_labels,
        image_field_key=schema.ENCODED,
        label_field_key=schema.LABEL,
        decode_jpeg_only=True,
        aug_rand_hflip=True,
        aug_crop=True,
        is_multilabel=True,
        dtype="float32",
    )
    parse = parser.parse_fn(is_training=True)
    ds = read_records(files).map(lambda s: parse(decoder.decode(s)), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def ours(shards: Path, size: int, batch: int, training: bool, augment=None, after_batch=None):
    from fashion_tf.config import DataConfig
    from fashion_tf.data import make_dataset

    cfg = DataConfig(tfrecords=str(shards), image_size=size, batch_size=batch)
    ds = make_dataset(cfg, "train", training=training, augment=augment)
    if not training:
        ds = ds.repeat()
    if after_batch is not None:
        import tensorflow as tf

        def apply(images, labels):
            return after_batch(images), labels

        ds = ds.map(apply, num_parallel_calls=tf.data.AUTOTUNE)
    return ds


def directory_pipeline(tree: Path, size: int, batch: int):
    """(e): keras.utils.image_dataset_from_directory (decode + resize of files)."""
    import keras
    import tensorflow as tf

    ds = keras.utils.image_dataset_from_directory(
        str(tree), image_size=(size, size), batch_size=batch, label_mode="categorical", shuffle=True, seed=0, verbose=False
    )
    return ds.repeat().prefetch(tf.data.AUTOTUNE)


# ---- measuring ----------------------------------------------------------------------------------------
def measure_interleaved(factories: dict, seconds: float, rounds: int, warmup: float) -> dict:
    """images/s of each pipeline; each gets `rounds` turns of seconds/rounds, in alternation, fresh iterator each
    turn (warm-up excluded every turn)."""
    from fashion_tf.data.benchmark import measure_throughput

    totals = {name: [0, 0.0, 0.0] for name in factories}
    for round_index in range(rounds):
        names = list(factories) if round_index % 2 == 0 else list(reversed(factories))
        for name in names:
            result = measure_throughput(factories[name](), seconds / rounds, warmup_seconds=warmup)
            totals[name][0] += result["images"]
            totals[name][1] += result["seconds"]
            totals[name][2] += result["cpu_ms_per_image"] * result["images"]
            print(
                f"  {name}: round {round_index + 1}: {result['images_per_s']:.1f} images/s, "
                f"{result['cpu_ms_per_image']:.2f} CPU ms/image",
                flush=True,
            )
    return {
        name: {"images_per_s": images / max(elapsed, 1e-9), "cpu_ms_per_image": cpu / max(images, 1)}
        for name, (images, elapsed, cpu) in totals.items()
    }


def load_info(shards: Path) -> tuple[list[str], int]:
    folder = ShardFolder(shards)
    return folder.shard_files("train"), folder.num_labels


def tfmodels_worker(args) -> int:
    """Runs inside bench/.venv-tfmodels: (c) and (d) in alternation, JSON to --out."""
    import tensorflow as tf

    files, num_labels = load_info(Path(args.shards))
    results = {"tensorflow": tf.__version__}
    for size in args.size_list:
        print(f"[Model Garden venv] {size} px", flush=True)
        results[str(size)] = measure_interleaved(
            {
                "c_plain": lambda: plain_pipeline(files, size, args.batch_size, num_labels),
                "d_model_garden": lambda: model_garden_pipeline(files, size, args.batch_size, num_labels),
            },
            args.seconds, args.rounds, args.warmup,
        )
    Path(args.out).write_text(json.dumps(results))
    return 0


def ensure_tfmodels_venv(timeout: float) -> tuple[bool, str]:
    python = TFMODELS_VENV / "bin" / "python"
    probe = [str(python), "-c", "import official.vision.dataloaders.classification_input"]
    if python.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return True, "existing venv"
    print(f"installing {TFMODELS_REQUIREMENT} into {TFMODELS_VENV} (one time; can take many minutes) ...", flush=True)
    start = time.time()
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(TFMODELS_VENV)], check=True, timeout=300)
        (TFMODELS_VENV / ".gitignore").write_text("*\n")  # keep the venv out of git whatever the repo ignores
        done = subprocess.run(
            [str(python), "-m", "pip", "install", "-q", TFMODELS_REQUIREMENT],
            capture_output=True, text=True, timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return False, f"pip install {TFMODELS_REQUIREMENT} did not finish in {timeout:.0f} s"
    except subprocess.CalledProcessError as err:
        return False, f"could not create the venv ({err})"
    if done.returncode != 0:
        lines = [l for l in done.stderr.splitlines() if l.strip() and not l.startswith("WARNING: Location")]
        return False, f"pip install {TFMODELS_REQUIREMENT} failed: {(lines or ['?'])[-1]}"
    if subprocess.run(probe, capture_output=True).returncode != 0:
        return False, "installed, but importing official.vision.dataloaders.classification_input fails"
    return True, f"installed in {time.time() - start:.0f} s"


def other_load() -> dict:
    load = os.getloadavg()
    ps = subprocess.run(["ps", "-eo", "pcpu,args", "--sort=-pcpu"], capture_output=True, text=True).stdout.splitlines()
    mine = str(os.getpid())
    top = [line.strip()[:110] for line in ps[1:9] if mine not in line and "bench_data.py" not in line]
    return {"loadavg_1_5_15": [round(x, 2) for x in load], "top_processes": top}


def markdown(results: dict) -> str:
    lines = [
        f"# bench_data ({results['date']}, {results['cores']} cores, batch {results['batch_size']}, "
        f"{results['seconds']} s per measure in {results['rounds']} rounds)",
        "",
        f"shards: {results['shards_made_by']}; Model Garden: {results['tfmodels']}",
        "",
        "| size | pipeline | images/s | CPU ms/image | / (c) by images/s | / (c) by CPU |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for size, row in results["by_size"].items():
        for name, m in row["measures"].items():
            lines.append(
                f"| {size} | {name} | {m['images_per_s']:.1f} | {m['cpu_ms_per_image']:.2f} | "
                f"{row['vs_plain'][name]:.3f} | {row['vs_plain_cpu'][name]:.3f} |"
            )
    lines += ["", "Goals:"]
    for line in results["goals"]:
        lines.append(f"- {line}")
    lines += ["", f"load before: {results['load_before']['loadavg_1_5_15']}, after: {results['load_after']['loadavg_1_5_15']}"]
    lines += ["top processes before the run:"] + [f"    {p}" for p in results["load_before"]["top_processes"]]
    return "\n".join(lines) + "\n"


def run(args) -> int:
    import tensorflow as tf

    source = data_dir()
    if not (source / "train.json").is_file():
        print(f"skipped: {source} not found (set FASHION_PRODUCTS_DIR)")
        return 0
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    load_before = other_load()
    started = time.time()
    shards, made_by = build_shards(source, work)
    upscaled = build_upscaled_shards(source, work)
    tree = build_class_tree(source, work)
    print(f"inputs ready in {time.time() - started:.0f} s: {shards} ({made_by}), {upscaled}, {tree}", flush=True)

    from fashion_tf.config import DataConfig

    default_augment = DataConfig().augment
    files, num_labels = load_info(shards)
    batch = args.batch_size
    by_size = {}
    for size in args.size_list:
        print(f"[main venv, TF {tf.__version__}] {size} px", flush=True)
        rates = measure_interleaved(
            {
                "c_plain": lambda: plain_pipeline(files, size, batch, num_labels),
                "a_train_crop_flip": lambda: ours(shards, size, batch, True, ["crop", "flip"]),
                f"a_train_default({'+'.join(default_augment)})": lambda: ours(shards, size, batch, True),
                "b_eval": lambda: ours(shards, size, batch, False),
                "e_image_dataset_from_directory": lambda: directory_pipeline(tree, size, batch),
            },
            args.seconds, args.rounds, args.warmup,
        )
        by_size[str(size)] = {"measures": rates}

    big_files, _ = load_info(upscaled)
    print(f"[main venv] {UPSCALED_SIZE} px JPEGs -> 224", flush=True)
    rates = measure_interleaved(
        {
            "c_plain": lambda: plain_pipeline(big_files, 224, batch, num_labels),
            "a_train_crop_flip": lambda: ours(upscaled, 224, batch, True, ["crop", "flip"]),
        },
        args.seconds, args.rounds, args.warmup,
    )
    by_size[f"{UPSCALED_SIZE}->224"] = {"measures": rates}

    if args.micro:
        import keras

        print("[main venv] augmentation micro-measures at 224 px", flush=True)
        rotation = keras.layers.RandomRotation(DataConfig().rotate_degrees / 360.0)
        rand_augment = keras.layers.RandAugment(value_range=(0, 255), num_ops=2, factor=0.9)

        def keras_rotation(images):
            return rotation(images, training=True)

        def keras_rand_augment(images):
            return rand_augment(images, training=True)
        rates = measure_interleaved(
            {
                "flip": lambda: ours(shards, 224, batch, True, ["flip"]),
                "flip+rotate (ours, ImageProjectiveTransformV3 per image)": lambda: ours(shards, 224, batch, True, ["flip", "rotate"]),
                "flip+keras.layers.RandomRotation (batch)": lambda: ours(
                    shards, 224, batch, True, ["flip"], after_batch=keras_rotation
                ),
                "flip+randaugment (ours, 2 ops, m=9)": lambda: ours(shards, 224, batch, True, ["flip", "randaugment"]),
                "flip+keras.layers.RandAugment (batch, 2 ops, factor 0.9)": lambda: ours(
                    shards, 224, batch, True, ["flip"], after_batch=keras_rand_augment
                ),
            },
            args.micro_seconds, 1, args.warmup,
        )
        by_size["224 augmentations"] = {"measures": rates}

    tfmodels_status = "skipped (--skip-tfmodels)"
    tfmodels = None
    if not args.skip_tfmodels:
        ok, tfmodels_status = ensure_tfmodels_venv(args.install_timeout)
        if ok:
            out = work / "tfmodels.json"
            command = [
                str(TFMODELS_VENV / "bin" / "python"), str(Path(__file__).resolve()), "--tfmodels-worker",
                "--shards", str(shards), "--sizes", args.sizes, "--seconds", str(args.seconds),
                "--rounds", str(args.rounds), "--warmup", str(args.warmup), "--batch-size", str(batch),
            ] + ["--out", str(out)]
            done = subprocess.run(command, timeout=1800)
            if done.returncode == 0:
                tfmodels = json.loads(out.read_text())
                tfmodels_status += f"; TF {tfmodels['tensorflow']} in that venv"
            else:
                tfmodels_status += f"; worker failed (exit {done.returncode})"
        print(f"Model Garden: {tfmodels_status}", flush=True)

    goals = []

    def add_ratios(row: dict, plain_name: str = "c_plain") -> None:
        """vs_plain: images/s over (c)'s images/s; vs_plain_cpu: (c)'s CPU ms/image over this one's (steadier
        when other users load the cores)."""
        plain = row["measures"][plain_name]
        row.setdefault("vs_plain", {})
        row.setdefault("vs_plain_cpu", {})
        for name, m in row["measures"].items():
            row["vs_plain"][name] = m["images_per_s"] / plain["images_per_s"]
            row["vs_plain_cpu"][name] = plain["cpu_ms_per_image"] / m["cpu_ms_per_image"]

    for size in args.size_list:
        row = by_size[str(size)]
        add_ratios(row)
        if tfmodels is not None:
            mg = tfmodels[str(size)]
            row["measures"]["c_plain (Model Garden venv)"] = mg["c_plain"]
            row["measures"]["d_model_garden"] = mg["d_model_garden"]
            row["vs_plain"]["c_plain (Model Garden venv)"] = 1.0
            row["vs_plain_cpu"]["c_plain (Model Garden venv)"] = 1.0
            row["vs_plain"]["d_model_garden"] = mg["d_model_garden"]["images_per_s"] / mg["c_plain"]["images_per_s"]
            row["vs_plain_cpu"]["d_model_garden"] = mg["c_plain"]["cpu_ms_per_image"] / mg["d_model_garden"]["cpu_ms_per_image"]
        b, b_cpu = row["vs_plain"]["b_eval"], row["vs_plain_cpu"]["b_eval"]
        goals.append(
            f"{size} px: (b) eval / (c) = {b:.3f} by images/s, {b_cpu:.3f} by CPU ms/image "
            f"(goal >= 0.9: {'met' if b >= 0.9 else 'NOT met'} / {'met' if b_cpu >= 0.9 else 'NOT met'})"
        )
        if tfmodels is not None:
            for key, label in (("vs_plain", "images/s"), ("vs_plain_cpu", "CPU ms/image")):
                a, d = row[key]["a_train_crop_flip"], row[key]["d_model_garden"]
                goals.append(
                    f"{size} px by {label}: (a crop+flip)/(c) = {a:.3f} vs (d)/(c') = {d:.3f}: {a / d:.2f}x "
                    f"(goal >= 1.5x: {'met' if a / d >= 1.5 else 'NOT met'})"
                )
        else:
            goals.append(f"{size} px: (a)/(d) not measured: Model Garden {tfmodels_status}")
    add_ratios(by_size[f"{UPSCALED_SIZE}->224"])
    if "224 augmentations" in by_size:
        add_ratios(by_size["224 augmentations"], plain_name="flip")

    results = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "cores": os.cpu_count(),
        "batch_size": batch,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "warmup_s_per_turn": args.warmup,
        "shards_made_by": made_by,
        "tfmodels": tfmodels_status,
        "by_size": by_size,
        "goals": goals,
        "load_before": load_before,
        "load_after": other_load(),
        "wall_s": round(time.time() - started, 1),
        "note": "'224 augmentations' ratios are relative to the flip-only training pipeline of that group",
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "bench_data.json").write_text(json.dumps(results, indent=2))
    text = markdown(results)
    (RESULTS_DIR / "bench_data.md").write_text(text)
    print(text)
    print(f"wrote {RESULTS_DIR / 'bench_data.json'} and bench_data.md in {results['wall_s']} s")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--work-dir", default="/tmp/fashion_tf_bench_data", help="shards, upscaled JPEGs, symlink tree")
    parser.add_argument("--sizes", default="224,299")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=16.0, help="measured seconds per pipeline and size")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved turns the seconds are split into")
    parser.add_argument("--warmup", type=float, default=3.0, help="warm-up seconds per turn, not counted")
    parser.add_argument("--micro", action=argparse.BooleanOptionalAction, default=True, help="augmentation micro-measures")
    parser.add_argument("--micro-seconds", type=float, default=8.0)
    parser.add_argument("--skip-tfmodels", action="store_true", help="skip (d), Model Garden's Parser")
    parser.add_argument("--install-timeout", type=float, default=1500.0, help="seconds allowed for the one-time pip install")
    parser.add_argument("--tfmodels-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--shards", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.size_list = [int(s) for s in args.sizes.split(",") if s.strip()]
    if args.tfmodels_worker:
        return tfmodels_worker(args)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
