#!/usr/bin/env python3
"""lsa_longdoc.py - long documents the model knows, for the LSA fidelity
benchmark: a hand-written story first (the one the question is about),
then TinyStories-like stories that stories260K writes itself, until the
document has a target number of the model's tokens.

Each generated story is `fm-decode --temp 1 --seed S -n 400 -p 'Once upon
a time'` for consecutive seeds (the last with a smaller -n), so a document
is the same for the same arguments on every machine.  The lead story's names (Tomas, Mr. Abel, ...)
appear only in it, so a question about them needs chunks from the start
of the document, far from the recent end.

usage: lsa_longdoc.py [--build DIR] [--model GGUF] [--tokens N] [--seed S]
                      LEAD.txt OUT.txt
         writes OUT.txt: LEAD.txt, then stories from seeds S, S+1, ...,
         the last one cut short, until the document has about N tokens
         (default 2000); prints the token count and the seeds used on stderr
"""
import argparse
import os
import subprocess
import sys

STORY_PROMPT = 'Once upon a time'
STORY_TOKENS = 400
SLACK = 32          # a document may end this many tokens short of its size


def count_tokens(fm_chunk, model, path):
    """Tokens of a text file under the model's tokenizer (fm-chunk --print-tokens)."""
    out = subprocess.run([fm_chunk, '-t', model, '--print-tokens', path], check=True,
                         capture_output=True, text=True).stdout
    return sum(len(line.split()) for line in out.splitlines())


def story(fm_decode, model, seed, n_new):
    """One story sampled by the model, without the final newline fm-decode adds."""
    out = subprocess.run([fm_decode, '-m', model, '--device', 'cpu', '--temp', '1',
                          '--seed', str(seed), '-n', str(n_new), '-p', STORY_PROMPT],
                         check=True, capture_output=True, text=True).stdout
    return out.rstrip('\n')


def make_doc(build, model, lead, out, tokens, seed):
    """Writes the document; returns (token count, seeds used)."""
    fm_chunk = os.path.join(build, 'fm-chunk')
    fm_decode = os.path.join(build, 'fm-decode')
    with open(lead) as f:
        parts = [f.read().rstrip('\n')]
    seeds = []
    while True:
        with open(out, 'w') as f:
            f.write('\n\n'.join(parts) + '\n')
        n = count_tokens(fm_chunk, model, out)
        # The last story is cut to what is left (its prompt and the blank line
        # take about 8 tokens), so the document ends close to the size.
        if n >= tokens - SLACK:
            return n, seeds
        s = seed + len(seeds)
        seeds.append(s)
        parts.append(story(fm_decode, model, s, min(STORY_TOKENS, tokens - n - 8)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--build', default='build')
    ap.add_argument('--model', default='models/stories260K.gguf')
    ap.add_argument('--tokens', type=int, default=2000)
    ap.add_argument('--seed', type=int, default=1)
    ap.add_argument('lead')
    ap.add_argument('out')
    a = ap.parse_args()
    n, seeds = make_doc(a.build, a.model, a.lead, a.out, a.tokens, a.seed)
    print('%s: %d tokens, lead %s, story seeds %s' % (a.out, n, a.lead, seeds), file=sys.stderr)


if __name__ == '__main__':
    main()
