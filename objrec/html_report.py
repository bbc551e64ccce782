"""report.html: one self-contained page (images embedded, no script, no external file) that a
person opens after training, after `objrec-predict --evaluate --report`, or after
preprocessing: the dataset, the curves, per-class figures, the confusion matrix, the most
confused pairs and the top losses, after fastai's `ClassificationInterpretation`.

Pure Python over plain values (metrics.json, metadata.json, encoded PNG/JPEG bytes), so the
trainer, the client and the preprocessing job each render their page without the others.
"""

import base64
import dataclasses
import html
from collections.abc import Mapping, Sequence

from objrec import contract

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .5em 0; }
td, th { border: 1px solid #ddd; padding: .25em .6em; text-align: right; }
th { background: #f4f4f4; } td.name, th.name { text-align: left; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
.gallery { display: flex; flex-wrap: wrap; gap: .8em; }
.gallery figure { margin: 0; width: 9em; font-size: .85em; }
.gallery img { width: 9em; height: 9em; object-fit: contain; image-rendering: pixelated;
               background: #eee; }
.wrong { color: #b00; } .summary td { text-align: left; }
"""


@dataclasses.dataclass(frozen=True)
class Example:
    """One image shown on the page: its encoded bytes and caption."""

    image: bytes  # PNG or JPEG
    caption: str
    wrong: bool = False


def data_uri(image: bytes) -> str:
    kind = "png" if image.startswith(b"\x89PNG") else "jpeg"
    return f"data:image/{kind};base64,{base64.b64encode(image).decode('ascii')}"


def image_tag(image: bytes, alt: str) -> str:
    return f'<img src="{data_uri(image)}" alt="{html.escape(alt)}">'


def table(header: Sequence[str], rows: Sequence[Sequence[object]], names: int = 1) -> str:
    """An HTML table; the first `names` columns are text, the rest figures."""

    def cell(tag: str, index: int, value: object) -> str:
        text = f"{value:.3f}" if isinstance(value, float) else str(value)
        kind = ' class="name"' if index < names else ""
        return f"<{tag}{kind}>{html.escape(text)}</{tag}>"

    head = "".join(cell("th", i, value) for i, value in enumerate(header))
    body = "".join(
        "<tr>" + "".join(cell("td", i, value) for i, value in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def summary_section(title: str, facts: Mapping[str, object]) -> str:
    rows = "".join(
        f"<tr><th class='name'>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in facts.items()
    )
    return f"<h1>{html.escape(title)}</h1><table class='summary'>{rows}</table>"


def dataset_section(metadata: Mapping, samples: Sequence[Example] = ()) -> str:
    """Class counts per split, rejections by reason, duplicates, a few images per class."""
    splits = metadata.get(contract.META_SPLITS, {})
    names = [split for split in contract.SPLITS if split in splits]
    labels = metadata.get(contract.META_LABELS, [])
    counts = [
        [label, *(splits[s].get(contract.META_CLASS_COUNTS, {}).get(label, 0) for s in names)]
        for label in labels
    ]
    totals = ["all", *(splits[s].get(contract.META_NUM_EXAMPLES, 0) for s in names)]
    reasons = metadata.get(contract.META_REJECTED_REASONS, {})
    parts = [
        "<h2>Dataset</h2>",
        f"<p>{metadata.get(contract.META_NUM_INPUTS, '?')} files listed: "
        f"{sum(totals[1:])} records, {metadata.get(contract.META_NUM_REJECTED, 0)} rejected, "
        f"{metadata.get(contract.META_NUM_DUPLICATES, 0)} duplicates.</p>",
        table(["class", *names], [*counts, totals]),
    ]
    if reasons:
        parts.append(table(["rejected because", "files"], sorted(reasons.items())))
    if samples:
        parts += ["<h3>Samples per class</h3>", gallery(samples)]
    return "".join(parts)


def per_class_section(metrics: Mapping) -> str:
    per_class = metrics[contract.METRIC_PER_CLASS]
    rows = [
        [label, *(per_class[label][key] for key in (contract.METRIC_PRECISION,
                                                    contract.METRIC_RECALL, contract.METRIC_F1)),
         per_class[label][contract.METRIC_SUPPORT]]
        for label in metrics[contract.METRIC_LABELS]
    ]  # fmt: skip
    header = ["class", "precision", "recall", "F1", "support"]
    return "<h2>Per class</h2>" + table(header, rows)


def confusion_section(metrics: Mapping, picture: bytes | None = None) -> str:
    """The matrix (as drawn, or as a table), and the most confused pairs."""
    labels = metrics[contract.METRIC_LABELS]
    matrix = metrics[contract.METRIC_CONFUSION_MATRIX]
    shown = (
        image_tag(picture, contract.CONFUSION_MATRIX_PICTURE)
        if picture
        else table(
            ["true \\ predicted", *labels],
            [[label, *row] for label, row in zip(labels, matrix, strict=True)],
        )  # fmt: skip
    )
    pairs = most_confused(labels, matrix)
    confused = (
        table(["true class", "predicted as", "images"], pairs)
        if pairs
        else "<p>No image of one class was predicted as another.</p>"
    )
    return f"<h2>Confusion matrix</h2>{shown}<h3>Most confused</h3>{confused}"


def most_confused(labels: Sequence[str], matrix: Sequence[Sequence[int]], count: int = 10):
    """(true, predicted, images) of the largest off-diagonal cells, largest first."""
    cells = [
        (labels[row], labels[column], value)
        for row, values in enumerate(matrix)
        for column, value in enumerate(values)
        if row != column and value
    ]
    return sorted(cells, key=lambda cell: -cell[2])[:count]


def gallery(examples: Sequence[Example]) -> str:
    figures = "".join(
        f"<figure>{image_tag(example.image, example.caption)}"
        f"<figcaption class='{'wrong' if example.wrong else ''}'>"
        f"{html.escape(example.caption)}</figcaption></figure>"
        for example in examples
    )
    return f"<div class='gallery'>{figures}</div>"


def top_losses_section(examples: Sequence[Example], how: str) -> str:
    if not examples:
        return "<h2>Top losses</h2><p>Every evaluated image was predicted right.</p>"
    return f"<h2>Top losses</h2><p>{html.escape(how)}</p>{gallery(examples)}"


def figures_section(title: str, pictures: Mapping[str, bytes]) -> str:
    tags = "".join(image_tag(data, name) for name, data in pictures.items())
    return f"<h2>{html.escape(title)}</h2><div class='figures'>{tags}</div>"


def page(title: str, sections: Sequence[str]) -> str:
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body>{''.join(sections)}</body></html>\n"
    )
