"""The Streamlit page: `streamlit run page.py -- --run-dir RUN ...` (what `python -m fashion_tf.app` starts).

Thin on purpose: what it shows comes from fashion_tf.app.labelling and fashion_tf.app.run_view. The run, the
model, the validation predictions and the shard index are loaded once per server process (st.cache_resource).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import streamlit as st

from fashion_tf.app import labelling, run_view
from fashion_tf.app.options import AppOptions, parse_options
from fashion_tf.app.shard_images import ShardIndex
from fashion_tf.errors import UserError
from fashion_tf.predict import load_model
from fashion_tf.run_folder import Run, load_run

LABEL_PAGE, INSIDE_PAGE = "Label photos", "Look inside the run"
MODE_TITLES = {"thresholds": "labels above their thresholds", "top_k": "top-k per group"}
GALLERY_PAGE_SIZE = 12
GALLERY_COLUMNS = 4
EVERY_GROUP, EVERY_LABEL = "every group", -1
BAR_COLOURS = {"chosen": "#d6336c", "over threshold": "#f08cae", "under threshold": "#b8c0cc"}
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>:~$])")


def md(text: str) -> str:
    """Text shown literally in Markdown (label names and file names come from users)."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", text)


# ---------------------------------------------------------------------------- loaded once per process
@st.cache_resource(show_spinner=False)
def _run(run_dir: str) -> Run:
    return load_run(run_dir)


@st.cache_resource(show_spinner="Loading the model (once per server process)…")
def _model(run_dir: str):
    return load_model(_run(run_dir))


@st.cache_resource(show_spinner=False)
def _val_predictions(run_dir: str) -> run_view.ValPredictions | None:
    return run_view.read_val_predictions(_run(run_dir))


@st.cache_resource(show_spinner="Indexing the validation shards (once per server process)…")
def _shard_index(folder: str, split: str) -> ShardIndex:
    return ShardIndex.build(Path(folder), split)


@st.cache_resource(show_spinner=False)
def _single_choice(run_dir: str, shards: str) -> list[str]:
    run = _run(run_dir)
    try:
        preds = _val_predictions(run_dir)
    except UserError:
        preds = None
    return run_view.single_choice_groups(run, Path(shards), preds)


# ---------------------------------------------------------------------------- the page
def render(options: AppOptions) -> None:
    st.set_page_config(page_title=f"fashion_tf · {options.run_dir.name}", layout="wide")
    try:
        run = _run(str(options.run_dir))
    except UserError as err:
        st.error(str(err))
        return
    with st.sidebar:
        st.title("fashion_tf")
        page = st.radio("Page", (LABEL_PAGE, INSIDE_PAGE), key="page")
        st.caption(f"Run: `{run.run_dir}`  \n{run.num_labels} labels in {len(run.label_map.group_names())} groups  \n"
                   f"Thresholds: {md(run.thresholds_source)}")
    if page == LABEL_PAGE:
        label_page(run, options)
    else:
        inside_page(run, options)


# ---------------------------------------------------------------------------- Label photos
def label_page(run: Run, options: AppOptions) -> None:
    st.header("Label photos")
    st.caption("The same decoding and thresholds as `python -m fashion_tf.predict`. "
               f"Up to {options.max_items} images at once, {options.max_image_mb:g} MiB each.")
    with st.form("inputs"):
        uploads = st.file_uploader("Images (JPEG, PNG, GIF, BMP)", accept_multiple_files=True,
                                   max_upload_size=options.upload_limit_mb, key="uploads")
        urls_text = ""
        if options.urls:
            urls_text = st.text_area("Image URLs, one per line", key="urls", placeholder="https://example.com/photo.jpg")
        submitted = st.form_submit_button("Label images", type="primary")
    if submitted:
        st.session_state["labelled"] = _label(run, options, list(uploads or []), urls_text)
    labelled, left_out = st.session_state.get("labelled") or ([], 0)
    if left_out:
        st.warning(f"{left_out} more images were left out: at most {options.max_items} are labelled at once.")
    if not labelled:
        st.info("Upload images or paste URLs, then press **Label images**.")
        return
    _show_labelled(run, options, labelled)


def _label(run: Run, options: AppOptions, uploads: list, urls_text: str) -> tuple[list[labelling.Labelled], int]:
    uploads, urls, left_out = labelling.within_limit(uploads, labelling.parse_urls(urls_text), options.max_items)
    items = [labelling.upload_item(upload.name, upload.getvalue(), options.max_image_bytes) for upload in uploads]
    with st.spinner(f"Labelling {len(uploads) + len(urls)} images…"):
        items += labelling.url_items(urls, options.fetch_options())
        if not items:
            return [], left_out
        return labelling.label_items(_model(str(run.run_dir)), run, items), left_out


def _show_labelled(run: Run, options: AppOptions, labelled: list[labelling.Labelled]) -> None:
    single = _single_choice(str(run.run_dir), str(run_view.shard_folder(run, options.data_dir)))
    left, right = st.columns([2, 1])
    mode = left.radio("Show", tuple(MODE_TITLES), format_func=MODE_TITLES.get, horizontal=True, key="mode")
    top_k = right.number_input("k", min_value=1, max_value=10, value=3, key="top_k") if mode == "top_k" else 1
    for item in labelled:
        with st.container(border=True):
            picture, labels = st.columns([1, 3])
            if item.error is not None:
                picture.markdown(f"**{md(item.name)}**")
                labels.error(f"{item.name}: {item.error}")
                continue
            picture.image(item.data, caption=item.name, width=200)
            groups = labelling.group_results(item.scores, run, single, mode, top_k)
            labels.markdown(_group_lines(groups, mode))
            labels.altair_chart(_bars_chart(groups), width="content")
    _results_table(run, labelled)


def _group_lines(groups: list[labelling.GroupResult], mode: str) -> str:
    lines = []
    for group in groups:
        kind = " (one label)" if group.single_choice else ""
        if group.chosen:
            shown = ", ".join(f"{md(label.name)} {label.score:.2f}" + (" ✓" if mode == "top_k" and label.passes else "")
                              for label in group.chosen)
        else:
            shown = "_none above its threshold_"
        lines.append(f"- **{md(group.group)}**{kind}: {shown}")
    if mode == "top_k":
        lines.append("\n✓ reaches its threshold")
    return "\n".join(lines)


def _bars_chart(groups: list[labelling.GroupResult]):
    """Every drawn score as a bar, its threshold as a black tick; one row of bars per label group."""
    import altair as alt
    import pandas as pd

    frame = pd.DataFrame([
        {"group": group.group, "label": label.name, "rank": rank, "score": label.score, "threshold": label.threshold,
         "state": "chosen" if label.chosen else ("over threshold" if label.passes else "under threshold")}
        for group in groups for rank, label in enumerate(group.bars)])
    y = alt.Y("label:N", sort=alt.EncodingSortField(field="rank", op="min", order="ascending"), title=None,
              axis=alt.Axis(labelOverlap=False, labelLimit=160))
    tooltip = ["group:N", "label:N", alt.Tooltip("score:Q", format=".3f"), alt.Tooltip("threshold:Q", format=".3f")]
    bars = alt.Chart().mark_bar().encode(
        x=alt.X("score:Q", scale=alt.Scale(domain=[0, 1]), title="score (black tick: threshold)"), y=y,
        color=alt.Color("state:N", scale=alt.Scale(domain=list(BAR_COLOURS), range=list(BAR_COLOURS.values())),
                        legend=alt.Legend(orient="bottom", title=None)),
        tooltip=tooltip)
    ticks = alt.Chart().mark_tick(color="black", thickness=2).encode(x="threshold:Q", y=y, tooltip=tooltip)
    header = alt.Header(labelAngle=0, labelAlign="left", labelFontWeight="bold", title=None)
    return (alt.layer(bars, ticks, data=frame).properties(width=380, height=alt.Step(17))
            .facet(row=alt.Row("group:N", sort=[group.group for group in groups], header=header), spacing=6)
            .resolve_scale(y="independent"))


def _results_table(run: Run, labelled: list[labelling.Labelled]) -> None:
    records = labelling.prediction_records(labelled, run)
    st.subheader("Results table")
    st.caption("The rows `python -m fashion_tf.predict` prints for these images: every label over its threshold.")
    import pandas as pd

    table = pd.DataFrame(labelling.csv_rows(records), columns=labelling.CSV_FIELDS)
    st.dataframe(table.fillna({"id": "", "name": "", "group": "", "error": ""}), hide_index=True)
    left, right = st.columns(2)
    left.download_button("Download CSV", labelling.csv_text(records), file_name="labels.csv", mime="text/csv")
    right.download_button("Download JSON lines", labelling.jsonl_text(records), file_name="labels.jsonl",
                          mime="application/jsonl")


# ---------------------------------------------------------------------------- Look inside the run
def inside_page(run: Run, options: AppOptions) -> None:
    st.header("Look inside the run")
    try:
        metrics = run_view.read_metrics(run.run_dir)
    except UserError as err:
        st.error(str(err))
        metrics = None
    if metrics is None:
        st.warning("This run has no metrics.json yet, so the figures and per-label F1 are missing. "
                   "fashion_tf.evaluate writes them:")
        st.code(run_view.evaluate_command(run, options.data_dir), language="bash")
    else:
        _figures(metrics)
    _curves(run)
    _gallery(run, options)


def _figures(metrics: dict) -> None:
    st.subheader("Figures")
    for column, (title, value) in zip(st.columns(4), run_view.headline_figures(metrics)):
        column.metric(title, "–" if value is None else f"{value:.3f}")
    st.caption(f"{metrics.get('split', '?')} split of {md(str(metrics.get('data', '?')))}: "
               f"{metrics.get('num_images', '?')} images; thresholds: {md(str(metrics.get('thresholds', '?')))}")
    top1 = run_view.top1_rows(metrics)
    if top1:
        st.markdown("**Top-1 accuracy in each single-choice group**")
        st.dataframe(top1, hide_index=True, width="content",
                     column_config={"top-1 accuracy": st.column_config.NumberColumn(format="%.3f")})
    st.subheader("Per-label F1, worst first")
    number = st.column_config.NumberColumn(format="%.3f")
    st.dataframe(run_view.per_label_f1(metrics), hide_index=True, column_config={
        "F1": st.column_config.ProgressColumn(min_value=0.0, max_value=1.0, format="%.3f"),
        "precision": number, "recall": number, "threshold": number, "AP": number})


def _curves(run: Run) -> None:
    import pandas as pd

    st.subheader("Training curves")
    history = run_view.read_history(run.run_dir)
    if history is None:
        st.info(f"No {run_view.history_file(run.run_dir).name} in this run (fashion_tf.train writes it).")
        return
    epochs = history.get("epoch") or list(range(len(next(iter(history.values())))))
    groups = run_view.curve_groups(history)
    for start in range(0, len(groups), 3):
        for column, (title, names) in zip(st.columns(3), groups[start:start + 3]):
            column.markdown(f"**{md(title)}**")
            column.line_chart(pd.DataFrame({name: history[name] for name in names}, index=pd.Index(epochs, name="epoch")),
                              x_label="epoch", height=220)


def _gallery(run: Run, options: AppOptions) -> None:
    st.subheader("Worst mistakes on the validation split")
    try:
        preds = _val_predictions(str(run.run_dir))
    except UserError as err:
        st.error(str(err))
        return
    if preds is None:
        st.info("This run has no val_predictions.npz (fashion_tf.train writes it at the end of training).")
        return
    lm = run.label_map
    left, right = st.columns(2)
    group = left.selectbox("Label group", [EVERY_GROUP, *lm.group_names()], key="gallery_group")
    members = lm.group_members(group) if group != EVERY_GROUP else range(run.num_labels)
    label = right.selectbox(
        "Label", [EVERY_LABEL, *[int(i) for i in members]], key=f"gallery_label_{group}",
        format_func=lambda i: "every label" if i == EVERY_LABEL else f"{lm.names[i]} ({lm.groups[i]})")
    mistakes = run_view.worst_mistakes(preds, run, None if group == EVERY_GROUP else group,
                                       None if label == EVERY_LABEL else label)
    scope = "" if group == EVERY_GROUP and label == EVERY_LABEL else (
        f" on {lm.names[label]}" if label != EVERY_LABEL else f" in {group}")
    st.caption(f"{len(mistakes)} of {len(preds.ids)} validation images have a wrong decision{md(scope)}, worst first "
               "(the sum of |score − threshold| over the wrong labels, as in fashion_tf.evaluate). "
               ":red[Red]: a missed true label, or a predicted label that is not true.")
    if not mistakes:
        return
    pages = run_view.page_count(len(mistakes), GALLERY_PAGE_SIZE)
    page = 1
    if pages > 1:
        page = st.number_input(f"Page (of {pages})", min_value=1, max_value=pages, value=1, key=f"gallery_page_{group}_{label}")
    shown = run_view.page_of(mistakes, page, GALLERY_PAGE_SIZE)
    images = _gallery_images(run, options, shown)
    for start in range(0, len(shown), GALLERY_COLUMNS):
        for column, mistake in zip(st.columns(GALLERY_COLUMNS), shown[start:start + GALLERY_COLUMNS]):
            with column.container(border=True):
                if images.get(mistake.image_id) is not None:
                    st.image(images[mistake.image_id], width="stretch")
                st.markdown(_mistake_caption(mistake, lm))


def _gallery_images(run: Run, options: AppOptions, shown) -> dict[str, bytes | None]:
    folder = run_view.shard_folder(run, options.data_dir)
    try:
        index = _shard_index(str(folder), run.config.data.val_split)
    except UserError as err:
        st.warning(f"The images cannot be shown: {err}. Start the app with --data SHARD_FOLDER to show them.")
        return {}
    return {mistake.image_id: index.encoded(mistake.image_id) for mistake in shown}


def _mistake_caption(mistake: run_view.Mistake, lm) -> str:
    def names(indices: list[int]) -> str:
        shown = [f":red[{md(lm.names[i])}]" if i in mistake.wrong else md(lm.names[i]) for i in indices]
        return ", ".join(shown) or "_none_"

    return (f"**{md(mistake.image_id)}** · margin {mistake.margin:.2f}  \n"
            f"true: {names(mistake.true)}  \npredicted: {names(mistake.predicted)}")


if __name__ == "__main__":  # `streamlit run` executes this file as __main__, with the launcher's arguments
    render(parse_options(sys.argv[1:]))
